"""RAM preflight: before a stage loads a model, estimate its peak RSS and refuse when the machine
can't hold it — a clear message instead of the kernel's OOM killer an hour into a release build.

The estimate is linear in the source model's parameter count (read from the safetensors headers,
nothing is loaded): ``peak = BASE_GIB + bytes_per_param(stage) * parameters``. The slopes are
calibrated on measured peaks (``/usr/bin/time -v``) of each step on random-weight Phi-3-mini shapes
(hidden 3072, 2 to 8 layers, extrapolated to 32 layers: peak RSS is linear in layers) and the
intercept on the embedded 135M model; see the README's "Measured" section. Stages that run an
artifact (smoke, validate) scale with the artifact's size on disk instead.

Override: ``AIPC_SKIP_MEMORY_CHECK=1`` (or ``aipc --skip-memory-check``) runs anyway;
``AIPC_MEMORY_BUDGET_GIB`` caps what the pipeline may use (default: what the machine has available,
MemAvailable and the cgroup limit).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, EnvironmentProblem
from .fsutil import dir_size
from .sources.checkpoint import read_safetensors_header

log = logging.getLogger(__name__)

GIB = 1 << 30
BASE_GIB = 0.9  # interpreter + torch/openvino/onnxruntime imports + tokenizers, measured on the embedded model
# Peak RSS bytes per source parameter (Phi-3-mini shapes, 32 layers extrapolated, bf16 source):
PER_PARAM = {
    # export once, compress many (benchmarks/scale.py, 2 and 4 real-width layers, 32 extrapolated, 3.9B):
    ("openvino", "base"): 2.0,    # main_export (load bf16 + trace + write): 0.22 GiB/layer, 8.1 GiB
    ("openvino", "fp16"): 2.0,    # base bf16 -> f16 (mapped pages dropped as read): 0.21 GiB/layer, 8.1 GiB
    # data-free NNCF on the mapped base: the NPU IR (ratio 1.0) is flat 2.6 GiB at 2 and 4 layers, but mixed
    # INT4/INT8 (ratio 0.6, group 128) reads every base weight: 0.21 GiB/layer, 9.4 GiB (scale.py --data-free-int4)
    ("openvino", "int4"): 2.3,
    ("openvino", "int8"): 2.3,    # the same code path as data-free INT4 (not measured on its own)
    ("openvino", "int4-data-aware"): 3.7,  # GPTQ + scale estimation runs the model: 0.31 GiB/layer, 14.4 GiB
    ("openvino", "any"): 3.7,     # a kind not measured: the largest OpenVINO row of these
    ("openvino", "fp32"): 6.15,   # its own fp32 trace (docs notes: ~21.9 GiB at 3.8B)
    # ORT GenAI builder, the INT4 float graph going to the quantizer from disk (export.ortgenai).
    # benchmarks/ortgenai_memory.py slopes per 113M-parameter layer: dml-int4 0.269, cpu-int4 0.285,
    # dml-fp16 0.185 GiB = 2.55 / 2.70 / 1.75 B/param; 32 layers extrapolated 10.3 / 11.3 / 7.7 GiB
    ("ortgenai", "any"): 2.7,
    # rtn / k_quant keep the builder's in-memory graph: dml-int4 0.481, cpu-int4 (fp32 graph) 0.711 GiB
    # per layer = 4.56 / 6.74 B/param; 32 layers extrapolated 17.6 / 26.0 GiB
    ("ortgenai", "int4-in-memory"): 6.5,
    # transformers 4.57 loads fp32 through pipeline.torchload (one copy), then the compile: 0.42 GiB/layer,
    # 15.1 GiB at 3.9B (its own fp32 from_pretrained also held the mapped bf16 file: 0.63 GiB/layer, 22.4 GiB)
    ("npu", "any"): 3.9,
    # loaded in bf16 (views of the mapped file), cast to fp32 in chunks, each chunk's mapped pages dropped
    # (pipeline.torchload.load_causal_lm): 0.42 GiB/layer = the fp32 weights, 15.7 GiB
    # (a direct fp32 from_pretrained kept the whole mapped file too: 0.63 GiB/layer, 22.4 GiB)
    ("reference", "float32"): 4.1,
    ("reference", "bfloat16"): 2.2,
}
# smoke/validate: the runtime opens the artifact; peak = BASE + factor x artifact size (benchmarks/scale.py at 3.9B).
# OpenVINO: the CPU plugin's packed copy, the mapped IR's pages dropped as it packs (validate fp16 8.2 GiB for a
# 7.3 GiB IR, mixed INT4 3.5 GiB; 16.2 GiB before the page drop). ORT GenAI's CPU provider holds fp32 copies of an
# fp16 model's weights, 0.42 GiB/layer (fit on 2, 4 and 6 layers: validate dml-fp16 15.2 GiB, smoke 15.4 GiB);
# the NPU library's CPU fallback 4.4 GiB.
ARTIFACT_FACTOR = {"openvino": 1.3, "ortgenai": 2.2, "npu": 2.3}
SKIP_ENV = "AIPC_SKIP_MEMORY_CHECK"
BUDGET_ENV = "AIPC_MEMORY_BUDGET_GIB"


def count_parameters(source_dir: Path) -> int:
    """Number of weights in the checkpoint, from the safetensors headers (no tensor is read)."""
    total = 0
    for path in sorted(Path(source_dir).glob("*.safetensors")):
        for t in read_safetensors_header(path).values():
            numel = 1
            for d in t["shape"]:
                numel *= d
            total += numel
    return total


def available_bytes() -> int:
    """What this process may still allocate: MemAvailable, capped by a cgroup v2 limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def budget_bytes() -> tuple[int, str]:
    raw = os.environ.get(BUDGET_ENV)
    if raw:
        try:
            value = float(raw)
            if value <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{BUDGET_ENV} = {raw!r} is not a positive number of GiB",
                              fix=f"set {BUDGET_ENV} to e.g. 16, or unset it to use the memory available") from None
        return int(value * GIB), f"{BUDGET_ENV}={raw}"
    return available_bytes(), "available memory (MemAvailable / cgroup limit)"


def estimate_export(backend: str, kind: str, source_dir: Path) -> dict[str, Any]:
    params = count_parameters(source_dir)
    per = PER_PARAM.get((backend, kind)) or PER_PARAM[(backend, "any")]
    return {"parameters": params, "bytes_per_parameter": per,
            "estimate_bytes": int(BASE_GIB * GIB + per * params)}


def estimate_artifact(backend: str, folder: Path) -> dict[str, Any]:
    size = dir_size(folder)
    factor = ARTIFACT_FACTOR.get(backend, max(ARTIFACT_FACTOR.values()))
    return {"artifact_bytes": size, "artifact_factor": factor, "estimate_bytes": int(BASE_GIB * GIB + factor * size)}


def require(what: str, estimate: dict[str, Any]) -> dict[str, Any]:
    """Refuse (EnvironmentProblem) when ``estimate['estimate_bytes']`` exceeds the memory budget."""
    need = estimate["estimate_bytes"]
    have, source = budget_bytes()
    record = {**estimate, "budget_bytes": have, "budget_source": source}
    basis = (f"{estimate['parameters'] / 1e9:.2f} B parameters x {estimate['bytes_per_parameter']} B"
             if "parameters" in estimate
             else f"{estimate['artifact_bytes'] / GIB:.2f} GiB artifact x {estimate['artifact_factor']}")
    log.info("memory preflight %s: estimated peak %.2f GiB (%s + %.1f GiB), %s %.2f GiB", what, need / GIB, basis,
             BASE_GIB, source, have / GIB)
    if need <= have:
        return record
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        log.warning("memory preflight %s: estimated %.2f GiB > %.2f GiB, running anyway (%s is set)",
                    what, need / GIB, have / GIB, SKIP_ENV)
        record["skipped"] = True
        return record
    raise EnvironmentProblem(
        f"{what} needs an estimated {need / GIB:.1f} GiB of memory ({basis} + {BASE_GIB} GiB, calibrated on "
        f"measured peaks), but the {source} is {have / GIB:.1f} GiB",
        fix="free memory (close other programs; run one stage at a time: `dvc repro -s <stage>`) or use a bigger "
        f"machine; to run anyway set {SKIP_ENV}=1 (or `aipc --skip-memory-check ...`)",
    )


def estimate_command(args: list[str], root: Path, params_path: Path) -> int | None:
    """The peak memory of ``aipc <args>`` run in workspace ``root``, as the command's own preflight will
    estimate it (None: not known before it runs). Used to decide which stages may run side by side."""
    from . import paths

    light = {"download", "calibration", "bundle", "report", "check"}  # no model is loaded
    if not args:
        return None
    command, rest = args[0], args[1:]
    if command in light:
        return int(BASE_GIB * GIB)
    from .config import load_params

    params = load_params(params_path)
    source = root / paths.source_dir()
    if command == "export" and rest[:1] == ["openvino-base"]:
        found = estimate_export("openvino", "base", source)
    elif command == "export" and len(rest) >= 2:
        backend, key = rest[0], rest[1]
        found = estimate_export(backend, getattr(params, backend).variants[key].memory_kind, source)
    elif command == "reference":
        found = estimate_export("reference", params.validation.reference_dtype, source)
    elif command in ("smoke", "validate") and len(rest) >= 2:
        found = estimate_artifact(rest[0], root / paths.artifact_dir(rest[0], rest[1]))
    else:
        return None
    # no checkpoint or artifact on disk yet (its producer has not run, e.g. it is frozen or not planned):
    # the estimate would be the imports alone, so it is not known
    if not found.get("parameters", found.get("artifact_bytes")):
        return None
    return found["estimate_bytes"]
