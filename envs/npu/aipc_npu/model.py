"""Compile a checkpoint with intel-npu-acceleration-library 1.4.0, and run a compiled artifact.

Heavy imports (torch, transformers, the library) happen inside the functions.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from . import COPY_FILES, COPY_PATTERNS, MODEL_FILE
from . import loader
from .artifact import versions
from .loader import check_versions, expected_hashes, read_json, sha256_file, verify_files
from .errors import NPUError
from .packing import faster_packing

log = logging.getLogger("aipc_npu")

DTYPES = ("int4", "int8", "fp16")


def _library():
    try:
        return loader.import_library()
    except loader.LoaderError as err:
        raise NPUError("environment", err.message, fix="rebuild the NPU environment: bash envs/npu/setup.sh") from err


def peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def device_info(npu_present: bool) -> dict[str, Any]:
    if npu_present:
        return {"device": "NPU", "npu_available": True}
    # The library warns "fallback to AUTO"; its C++ compile_model then picks OpenVINO's CPU plugin.
    return {"device": "CPU", "npu_available": False, "device_fallback": "CPU"}


def _untie_lm_head(model) -> bool:
    """Give lm_head its own weight when it shares the input embedding's.

    In 1.4.0 neural-compressor's weight-only RTN writes the quantized integer codes into the
    lm_head weight tensor in place; with tied embeddings that tensor IS the embedding table, which
    then holds integers (|x| <= 127) and the model produces garbage (measured: int8 logit cosine
    0.28, top-1 0.0 on SmolLM2-135M). Phi-3-mini does not tie, SmolLM2 does.
    """
    import torch

    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    if out is None or inp is None or out.weight is not inp.weight:
        return False
    out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    return True


def _digest(tensor) -> tuple:
    """dtype, shape and sha256 of a tensor's bytes (read in place: no copy of a contiguous tensor)."""
    import hashlib

    import torch

    t = tensor.detach().contiguous()
    return str(t.dtype), tuple(t.shape), hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy()).hexdigest()


def compile_checkpoint(src: Path, out: Path, dtype: str) -> dict[str, Any]:
    """What ``NPUModelForCausalLM.from_pretrained(src, use_cache=True,
    config=CompilerConfig(dtype=...), export=False)`` does in 1.4.0 (modelling.py: transformers'
    ``AutoModelForCausalLM.from_pretrained`` then ``intel_npu_acceleration_library.compile``),
    with the tied lm_head untied in between, then ``torch.save(model, out/model.pt)``.

    The library's own path-keyed cache (``export=True``) is never used: it has no content hash, so
    new weights at the same path would silently return the old model.
    """
    if dtype not in DTYPES:
        raise NPUError("usage", f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if not (src / "config.json").is_file():
        raise NPUError("source", f"{src}: no config.json: not a transformers checkpoint")
    t0 = time.perf_counter()
    npu, npu_present = _library()
    import torch
    from intel_npu_acceleration_library.compiler import CompilerConfig

    from pipeline.torchload import load_causal_lm  # the repository root is on this env's PYTHONPATH

    cfg = CompilerConfig(dtype={"int4": npu.int4, "int8": npu.int8, "fp16": torch.float16}[dtype])
    t_load = time.perf_counter()
    try:
        # = from_pretrained(src, use_cache=True) (fp32, the library's default), bit for bit, but at one copy
        # of the weights: a bf16 checkpoint is loaded as views of its mapped file and cast weight by weight
        # (the direct fp32 load also holds the whole mapped file: 6 B/param, 22 GiB at Phi-3-mini shapes)
        model = load_causal_lm(src, "float32", use_cache=True)
    except Exception as err:  # noqa: BLE001
        raise NPUError("source", f"{src}: transformers {versions().get('transformers')} cannot load it: "
                       f"{type(err).__name__}: {err}") from err
    untied = _untie_lm_head(model)
    # Parameters the compiler must leave alone (embeddings, norms): checked after compiling, by digest
    # (a copy of them would cost the embedding table's size again: +0.2 GiB peak on SmolLM2-135M)
    kept = {n: _digest(p) for n, p in model.named_parameters()
            if not n.endswith(".weight") or "embed" in n or "norm" in n}
    t_compile = time.perf_counter()
    try:
        with torch.no_grad(), faster_packing(dtype != "fp16") as vectorized:
            model = npu.compile(model, cfg)
    except Exception as err:  # noqa: BLE001
        raise NPUError("compile", f"intel_npu_acceleration_library.compile({dtype}) failed: {type(err).__name__}: {err}") from err
    compile_s = time.perf_counter() - t_compile
    params = dict(model.named_parameters())
    changed = [n for n, d in kept.items() if n in params and _digest(params[n]) != d]
    if changed:
        raise NPUError("compile", f"compiling changed non-linear weights in place: {', '.join(changed[:5])}")
    del kept

    # A short forward pass: the kernels run (first run compiles them) and give finite logits.
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False).logits
    if not torch.isfinite(logits).all():
        raise NPUError("compile", "the compiled model gives non-finite logits on a 4-token probe")

    out.mkdir(parents=True, exist_ok=True)
    t_save = time.perf_counter()
    torch.save(model, out / MODEL_FILE)
    copied = []
    for name in COPY_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
            copied.append(name)
    for pattern in COPY_PATTERNS:
        for p in sorted(src.glob(pattern)):
            if p.is_file():
                shutil.copyfile(p, out / p.name)
                copied.append(p.name)
    if not {"tokenizer.json", "tokenizer.model"} & set(copied):
        raise NPUError("source", f"{src}: no tokenizer.json / tokenizer.model to ship with the artifact")
    quantized = sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__})
    return {
        "ok": True,
        "dtype": dtype,
        "model_file": MODEL_FILE,
        "model_sha256": sha256_file(out / MODEL_FILE),
        "copied": copied,
        "lm_head_untied": untied,
        "packing": "aipc_npu.packing (vectorized, bit-identical)" if vectorized else "neural-compressor",
        "linear_types": quantized,
        "versions": versions(),
        **device_info(npu_present),
        "seconds": {"import": round(t_load - t0, 2), "load": round(t_compile - t_load, 2),
                    "compile": round(compile_s, 2), "save": round(time.perf_counter() - t_save, 2),
                    "total": round(time.perf_counter() - t0, 2)},
        "peak_rss_mib": peak_rss_mib(),
    }


class Session:
    """A compiled artifact loaded for inference (after its sha256 and version checks), through
    :mod:`.loader`: the same code an NPU bundle's consumer runs."""

    def __init__(self, artifact: Path, manifest: Path, expect: Path | None = None):
        self.artifact = artifact
        data = read_json(manifest)
        if not isinstance(data, dict) or data.get("backend") != "npu" or data.get("format") != "torch-pickle":
            raise NPUError("integrity", f"{manifest}: not an NPU (torch-pickle) export record",
                           fix="point at an artifact written by `aipc export npu`")
        table = expected_hashes(read_json(expect) if expect else data, str(expect or manifest))
        # Everything but the pickle first, then the pickle through the file object it loads from.
        verify_files(artifact, table, skip=(MODEL_FILE,))
        check_versions(data.get("runtime") or {}, str(manifest))
        t0 = time.perf_counter()
        self.chat = loader.unpickle(artifact, table)
        self.load_s = time.perf_counter() - t0
        self.info = device_info(self.chat.npu_present)
        self.eos_ids = self.chat.eos_ids

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.chat.chat_prompt(messages)

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, Any]:
        return self.chat.generate(messages, max_new_tokens)

    def logits(self, ids: list[int]):
        return self.chat.logits(ids)
