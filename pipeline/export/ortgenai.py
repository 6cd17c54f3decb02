"""ONNX Runtime GenAI models through ``onnxruntime_genai.models.builder`` (its Python entry points).

The builder writes ``model.onnx`` + ``model.onnx.data``, ``genai_config.json`` and the tokenizer
(saved by transformers 5). The tokenizer config is then made loadable by older runtimes too,
notably ``onnxruntime-genai-directml`` on Windows, whose releases lag the builder (see
:func:`make_tokenizer_portable`). The options that really reached the graph (MatMulNBits
``block_size`` / ``accuracy_level``, symmetric or not) are read back and recorded.

Memory: for INT4 the builder hands its whole float graph to ORT's ``MatMulNBitsQuantizer`` as one in-memory
``ModelProto`` (``ir.to_proto``), i.e. a second, materialized copy of every weight (fp16 for DirectML, fp32
for CPU) next to the memory-mapped checkpoint.
:func:`~pipeline.compat.ortgenai_builder.unquantized_graph_on_disk` makes that one call write the graph to a
temp ONNX file instead (``ir.save`` evaluates the builder's lazy casts one tensor at a time) and gives the
quantizer a proto whose initializers point into that file; the quantizer reads each weight from disk as it
quantizes it. The output is byte-identical (tested); peak RSS per layer of real Phi-3-mini shapes goes from
0.48 to 0.27 GiB (dml-int4) and from 0.71 to 0.29 GiB (cpu-int4), benchmarks/ortgenai_memory.py
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Final

from ..compat import ortgenai_builder as builder
from ..compat.ortgenai_builder import SPILL_DIR, layers_without_random_init, unquantized_graph_on_disk
from ..config import OrtGenAIVariant, Params, layer_widths
from ..errors import ExportError
from ..records import EXPORT_JSON, OrtGenAIExportRecord
from ..fsutil import atomic_dir, read_json, write_json
from ..sources.checkpoint import read_model_config
from ..toolchain import versions

log = logging.getLogger(__name__)

BACKEND: Final = "ortgenai"
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


def builder_options(variant: OrtGenAIVariant) -> dict[str, str]:
    """The builder's ``extra_options`` for the variant: params.yaml in the builder's terms."""
    if variant.precision != "int4":
        return {}
    opts = {"block_size": str(variant.block_size), "accuracy_level": str(variant.accuracy_level),
            "is_symmetric": str(variant.is_symmetric).lower()}
    if variant.algo is not None:
        opts["algo_config"] = variant.algo
    if variant.matmul_mixed_precision:
        opts["matmul_mixed_precision"] = ",".join(f"{k}:{v}" for k, v in variant.matmul_mixed_precision.items())
    return opts


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
        record = OrtGenAIExportRecord(
            backend=BACKEND,
            variant=key,
            params=variant.model_dump(mode="json"),
            algorithm=variant.algorithm,
            calibration=None,  # the builder has no data-aware INT4 algorithm
            builder_extra_options=builder_options(variant),
            effective=effective_settings(tmp),
            tokenizer=tok,
            genai_config_dropped_defaults=dropped,
            # "disk": the float graph went to the quantizer from a temp file (unquantized_graph_on_disk)
            unquantized_graph=None if variant.precision != "int4" else ("disk" if spills else "memory"),
            min_runtime=MIN_RUNTIME,
            toolchain=versions(),
        )
        record.write(tmp / EXPORT_JSON)
    return record.dump()


def run_builder(key: str, variant: OrtGenAIVariant, source_dir: Path, out: Path, cache: Path) -> None:
    """The builder's Python entry for one params.yaml variant (:func:`pipeline.compat.ortgenai_builder.run_builder`)."""
    builder.run_builder(key, variant.precision, variant.execution_provider, builder_options(variant),
                        source_dir, out, cache)


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
