"""ONNX Runtime GenAI models through ``onnxruntime_genai.models.builder`` (its Python entry points).

The builder writes ``model.onnx`` + ``model.onnx.data``, ``genai_config.json`` and the tokenizer
(saved by transformers 5). The tokenizer config is then made loadable by older runtimes too,
notably ``onnxruntime-genai-directml`` on Windows, whose releases lag the builder (see
:func:`make_tokenizer_portable`). The options that really reached the graph (MatMulNBits
``block_size`` / ``accuracy_level``, symmetric or not) are read back and recorded.

Memory: for INT4 the builder hands its whole float graph to ORT's ``MatMulNBitsQuantizer`` as one
in-memory ``ModelProto`` (``ir.to_proto``), i.e. a second, materialized copy of every weight (fp16
for DirectML, fp32 for CPU) next to the memory-mapped checkpoint. :func:`unquantized_graph_on_disk`
makes that one call write the graph to a temp ONNX file instead (``ir.save`` evaluates the builder's
lazy casts one tensor at a time) and gives the quantizer a proto whose initializers point into that
file; the quantizer reads each weight from disk as it quantizes it. The output is byte-identical
(tested); peak RSS per layer of real Phi-3-mini shapes goes from 0.48 to 0.27 GiB (dml-int4) and
from 0.71 to 0.29 GiB (cpu-int4), benchmarks/ortgenai_memory.py (README).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import OrtGenAIVariant, Params, layer_widths
from ..errors import ExportError
from ..fsutil import atomic_dir, read_json, write_json
from ..sources.checkpoint import read_model_config
from ..toolchain import versions

log = logging.getLogger(__name__)

BACKEND = "ortgenai"
EXPORT_JSON = "aipc_export.json"
REQUIRED_FILES = ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json")

# tokenizer_class values every onnxruntime-extensions tokenizer since GenAI 0.6 accepts (0.6 matched
# them exactly; 0.7+ strip a "Fast" suffix; "TokenizersBackend", which transformers 5 writes, is only
# known from GenAI 0.14.0 on). BPE models; the Llama name also selects Llama's SentencePiece paths.
PORTABLE_TOKENIZER_CLASSES = ("LlamaTokenizer", "GPT2Tokenizer", "Phi3Tokenizer", "Qwen2Tokenizer",
                              "GemmaTokenizer", "CodeGenTokenizer")
# The oldest runtime that loads all three release variants (cpu-int4, dml-fp16, dml-int4) as written
# here AND gives the same greedy chat tokens as the builder's 0.18.0 (itself checked against a plain
# onnxruntime loop), measured on CPU by benchmarks/ortgenai_runtime_compat.sh (docs/ortgenai-runtime-compat.md):
#  - 0.9.1, because make_genai_config_portable drops the two default-valued sliding_window keys the
#    0.18 builder writes for CPU models ("cache_slack": 0 and "layers": []), which every release before
#    0.16.0 (cache_slack) / 0.11 (layers) rejects as unknown; 0.9.0 and older give wrong tokens when a
#    prompt contains pad_token_id (fixed upstream in 0.9.1);
#  - tokenizer ids match from 0.7.1; apply_chat_template (0.8.0+) renders the same prompt;
#  - the graphs need onnxruntime >= 1.23 (GroupQueryAttention with 12 inputs).
# onnxruntime-genai-directml: the same release line (DirectML can't run here); 0.9.1 .. 0.12.2 install
# from PyPI (0.13/0.14 need an onnxruntime-directml newer than PyPI has).
MIN_RUNTIME = {"onnxruntime-genai": "0.9.1", "onnxruntime-genai-directml": "0.9.1", "onnxruntime": "1.23.0"}


def export(params: Params, key: str, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    variant = params.ortgenai.variants[key]
    model_config = read_model_config(source_dir)
    variant.check_model(key, layer_widths(model_config))

    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="ortgenai-cache-") as cache:
        try:
            # the spill file sits in the output's temp dir (same file system as the artifact, never a
            # RAM-backed /tmp; removed with it on failure, deleted right after the build on success)
            with unquantized_graph_on_disk(tmp / SPILL_DIR, enabled=variant.int4_graph_on_disk) as spills, \
                    layers_without_random_init():
                run_builder(key, variant, source_dir, tmp, Path(cache))
        except (ValueError, KeyError, NotImplementedError) as err:
            raise ExportError(
                f"params.yaml: ortgenai.variants.{key}: the ORT GenAI builder refused the model or options: "
                f"{type(err).__name__}: {err}",
                fix="check the variant's precision/execution_provider/block_size against the builder's options",
            ) from err
        missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
        if missing:
            raise ExportError(f"the ORT GenAI builder did not write {', '.join(missing)} for {key!r}",
                              fix="see the builder's log above")
        tok = make_tokenizer_portable(tmp, source_dir)
        dropped = make_genai_config_portable(tmp)
        # the runtime reads genai_config.json; the model's own config ships too, as the source has it
        shutil.copyfile(source_dir / "config.json", tmp / "config.json")
        record = {
            "backend": BACKEND,
            "variant": key,
            "params": variant.model_dump(mode="json"),
            "algorithm": variant.algorithm,
            "calibration": None,  # the builder has no data-aware INT4 algorithm
            "builder_extra_options": variant.builder_extra_options(),
            "effective": effective_settings(tmp),
            "tokenizer": tok,
            "genai_config_dropped_defaults": dropped,
            # "disk": the float graph went to the quantizer from a temp file (unquantized_graph_on_disk)
            "unquantized_graph": None if variant.precision != "int4" else ("disk" if spills else "memory"),
            "min_runtime": MIN_RUNTIME,
            "toolchain": versions(),
        }
        write_json(tmp / EXPORT_JSON, record)
    return record


def run_builder(key: str, variant: OrtGenAIVariant, source_dir: Path, out: Path, cache: Path) -> None:
    """The builder's Python entry (what its ``-m`` form runs) for one variant, options as extra_options."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    extra = [f"{k}={v}" for k, v in variant.builder_extra_options().items()]
    log.info("building ORT GenAI %s (%s, %s%s)", key, variant.precision, variant.execution_provider,
             f", {' '.join(extra)}" if extra else "")
    options = parse_extra_options(
        model_name=str(source_dir), input_path=str(source_dir), output_dir=str(out),
        precision=variant.precision, execution_provider=variant.execution_provider,
        cache_dir=str(cache), extra_options=extra,
    )
    create_model(str(source_dir), str(source_dir), str(out), variant.precision, variant.execution_provider,
                 str(cache), **options)


SPILL_DIR = ".aipc-unquantized"


def _spill_to_disk(model: Any, spill_dir: Path) -> Any:
    """``ir.to_proto(model)``, but every initializer over 1 KiB lives in ``spill_dir`` as external data.

    The locations are absolute, so ORT's quantizer (``ir.from_proto(t).numpy()``, no base dir)
    memory-maps each weight from the file only while it quantizes it.
    """
    import onnx
    import onnx_ir as ir

    spill_dir.mkdir(parents=True, exist_ok=True)
    path, data = spill_dir / "unquantized.onnx", spill_dir / "unquantized.onnx.data"
    ir.save(model, path, external_data=data.name, size_threshold_bytes=1024)
    proto = onnx.load(str(path), load_external_data=False)
    data_path = str(data.resolve())
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = data_path
    return proto


def _builder_model_class() -> Any:
    """The builder's ``builders.base.Model`` (imported as a top-level module by the builder), or None."""
    import onnxruntime_genai.models.builder  # noqa: F401  (puts its `builders` package on sys.path)

    base = sys.modules.get("builders.base")
    return getattr(base, "Model", None) if base is not None else None


@contextlib.contextmanager
def layers_without_random_init() -> Iterator[bool]:
    """While the builder maps each decoder layer to ONNX ops, torch's weight-init functions do nothing.

    To split a fused projection (Phi-3's ``qkv_proj`` and ``gate_up_proj``) the builder creates
    ``torch.nn.Linear`` modules and assigns each a slice of the loaded weight right after, so the
    fp32 random init ``Linear`` runs in its constructor is computed and thrown away: measured 2.5 s of
    a 23 s dml-int4 build at 4 Phi-3-mini layers, about 20 s per variant at 32 layers. Wraps only the
    builder's ``make_layer`` (the weights are already loaded then) in transformers' own
    ``no_init_weights``; the written model is byte-identical (tests/test_ortgenai.py). Yields whether
    the wrap is in place (False, with a warning, if the builder's layout changed).
    """
    from unittest import mock

    from transformers.initialization import no_init_weights

    model_class = _builder_model_class()
    if model_class is None or not hasattr(model_class, "make_layer"):
        log.warning("onnxruntime-genai builder layout not recognized: its layers are built with torch's random init")
        yield False
        return
    upstream = model_class.make_layer

    def make_layer(self: Any, *args: Any, **kwargs: Any) -> Any:
        with no_init_weights():
            return upstream(self, *args, **kwargs)

    with mock.patch.object(model_class, "make_layer", make_layer):
        yield True


@contextlib.contextmanager
def unquantized_graph_on_disk(spill_dir: Path, enabled: bool = True) -> Iterator[list[Path]]:
    """While the builder runs, its ``to_nbits`` gets the float graph from disk, not from memory.

    Wraps only the one ``ir.to_proto(self.model)`` call inside the builder's own ``to_nbits``;
    everything else (quantizer choice, mixed precision, exact overrides) is the builder's code.
    Yields the list of spill folders used (empty: the graph stayed in memory). The builder imports its classes as the top-level
    module ``builders.base``; if that layout changes, this logs a warning and changes nothing.

    Only for the builder's default quantizer (``enabled``): its RTN / k_quant paths load weights
    through ``onnx.numpy_helper``, which refuses absolute external-data locations, and they
    rebuild the whole graph anyway, so they keep the upstream in-memory path.
    """
    from unittest import mock

    import onnx_ir as ir

    spills: list[Path] = []
    if not enabled:
        yield spills
        return
    model_class = _builder_model_class()
    if model_class is None or not hasattr(model_class, "to_nbits"):
        log.warning("onnxruntime-genai builder layout not recognized: INT4 quantization runs in memory")
        yield spills
        return
    upstream_to_nbits = model_class.to_nbits
    real_to_proto = ir.to_proto

    def to_nbits(self: Any) -> Any:
        def to_proto(obj: Any) -> Any:
            if obj is self.model:
                spills.append(spill_dir / str(len(spills) + 1))
                return _spill_to_disk(obj, spills[-1])
            return real_to_proto(obj)

        with mock.patch.object(ir, "to_proto", to_proto):
            return upstream_to_nbits(self)

    try:
        with mock.patch.object(model_class, "to_nbits", to_nbits):
            yield spills
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


# genai_config.json keys the 0.18 builder writes with their default value and older parsers reject
# ("Unknown value"): dropping them changes nothing for new runtimes (same tokens, checked).
_DEFAULT_ONLY_KEYS = {("sliding_window", "cache_slack"): 0, ("sliding_window", "layers"): []}


def make_genai_config_portable(folder: Path) -> list[str]:
    path = folder / "genai_config.json"
    cfg = read_json(path)
    dec = cfg["model"]["decoder"]
    dropped = []
    for (section, key), default in _DEFAULT_ONLY_KEYS.items():
        block = dec.get(section)
        if isinstance(block, dict) and key in block and block[key] == default:
            del block[key]
            dropped.append(f"model.decoder.{section}.{key}")
    if dropped:
        write_json(path, cfg)
    return dropped


def _tokenizer_class_for(folder: Path, source_dir: Path) -> str:
    src_cfg = source_dir / "tokenizer_config.json"
    if src_cfg.is_file():
        cls = read_json(src_cfg).get("tokenizer_class", "").removesuffix("Fast")
        if cls in PORTABLE_TOKENIZER_CLASSES:
            return cls
    model = read_json(folder / "tokenizer.json").get("model", {})
    pre = json.dumps(read_json(folder / "tokenizer.json").get("pre_tokenizer") or {})
    if model.get("byte_fallback") or "Metaspace" in pre:
        return "LlamaTokenizer"
    return "GPT2Tokenizer"


def make_tokenizer_portable(folder: Path, source_dir: Path) -> dict[str, Any]:
    """Rewrite tokenizer_config.json (and tokenizer.json merges) so older GenAI runtimes load them.

    - ``tokenizer_class``: transformers 5 writes ``TokenizersBackend``, which GenAI 0.6–0.13
      reject ("Unsupported tokenizer class") and 0.4/0.5 misread; the source's own class (e.g.
      Phi-3's ``LlamaTokenizer``) or the class matching the tokenizer.json model is written instead.
    - ``chat_template`` inline: GenAI 0.8 reads only this key (0.9+ also chat_template.jinja).
    - ``add_bos_token``/``add_eos_token`` explicit, from the source (transformers 5 drops them).
    - merges as ``"a b"`` strings where no merge part contains a space (GenAI 0.4 parses only those).
    """
    cfg_path = folder / "tokenizer_config.json"
    cfg = read_json(cfg_path)
    src = read_json(source_dir / "tokenizer_config.json") if (source_dir / "tokenizer_config.json").is_file() else {}
    before = cfg.get("tokenizer_class")
    cfg["tokenizer_class"] = _tokenizer_class_for(folder, source_dir)
    template = None
    for candidate in (folder / "chat_template.jinja", source_dir / "chat_template.jinja"):
        if candidate.is_file():
            template = candidate.read_text(encoding="utf-8")
            break
    template = template or src.get("chat_template")
    if isinstance(template, str):
        cfg["chat_template"] = template
    for flag in ("add_bos_token", "add_eos_token"):
        cfg[flag] = bool(src.get(flag, False))
    write_json(cfg_path, cfg)

    tj_path = folder / "tokenizer.json"
    tj = read_json(tj_path)
    merges = tj.get("model", {}).get("merges")
    merges_as = "absent"
    if merges:
        if all(isinstance(m, list) and len(m) == 2 and " " not in m[0] + m[1] for m in merges):
            tj["model"]["merges"] = [f"{a} {b}" for a, b in merges]
            tj_path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
            merges_as = "strings"
        else:
            merges_as = "strings" if all(isinstance(m, str) for m in merges) else "arrays"
    return {"tokenizer_class": cfg["tokenizer_class"], "tokenizer_class_written_by_transformers": before,
            "chat_template_inline": isinstance(template, str), "merges": merges_as}


def effective_settings(folder: Path) -> dict[str, Any]:
    """Provider, dtypes and the MatMulNBits attributes actually in the graph."""
    import onnx

    genai = read_json(folder / "genai_config.json")
    dec = genai["model"]["decoder"]
    providers = [next(iter(p)) for p in dec.get("session_options", {}).get("provider_options", [])]
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    nbits: Counter[str] = Counter()
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            sym = len(n.input) < 4 or not n.input[3]  # a zero-points input means asymmetric
            nbits[f"bits={a.get('bits')},block_size={a.get('block_size')},"
                  f"accuracy_level={a.get('accuracy_level', 0)},symmetric={str(sym).lower()}"] += 1
    return {
        "providers": providers,
        "matmulnbits": dict(sorted(nbits.items())),
        "op_counts": {k: ops[k] for k in sorted(ops) if k in ("MatMulNBits", "MatMul", "GroupQueryAttention",
                                                               "GatherBlockQuantized", "Gather")},
        "logits_dtype": next((onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type)
                              for o in model.graph.output if o.name == "logits"), None),
    }
