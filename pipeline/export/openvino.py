"""OpenVINO IR export through optimum-intel's Python API (the code path ``optimum-cli export openvino`` runs).

Every compression option is passed explicitly, so optimum-intel's hidden per-model default
configs never apply, and the effective settings are read back from the IR itself (NNCF's rt_info
plus the shapes and element types of the compressed weight constants) because optimum-intel's
``openvino_config.json`` does not record them.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from ..config import OpenVINOVariant, Params, layer_widths
from ..errors import ExportError
from ..fsutil import atomic_dir, write_json
from ..sources.checkpoint import read_model_config
from ..toolchain import versions

log = logging.getLogger(__name__)

BACKEND = "openvino"
EXPORT_JSON = "aipc_export.json"
TASK = "text-generation-with-past"
REQUIRED_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
    "config.json",
    "generation_config.json",
)


def disable_telemetry() -> None:
    """Decline OpenVINO telemetry for this process only (no consent file is written).

    Offline, openvino-telemetry forks a child per event (~2x export time), and a pipeline
    should not phone home from users' CI. This is the library's own "declined" path.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # pragma: no cover - telemetry package absent: nothing to disable
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


def export(params: Params, key: str, source_dir: Path, out_dir: Path,
           calibration_dir: Path | None = None) -> dict[str, Any]:
    """Export variant ``key`` of ``params.openvino.variants`` from the checkpoint in ``source_dir``.

    Data-aware variants (``dataset: calibration``) read the calibration stage's windows from
    ``calibration_dir`` (default ``artifacts/calibration``).
    """
    variant = params.openvino.variants[key]
    model_config = read_model_config(source_dir)
    variant.check_model(key, layer_widths(model_config))
    calibration = None
    if variant.data_aware:
        from validation.calibration import load_calibration

        from .. import paths

        calibration = load_calibration(calibration_dir or paths.calibration_dir())
    disable_telemetry()

    import warnings

    import torch
    from optimum.exporters.openvino.__main__ import _main_quantize, main_export

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # expected while tracing
    from optimum.intel.openvino.configuration import OVConfig

    qcfg = variant.optimum_quantization_config()
    ov_config = OVConfig(quantization_config=qcfg) if qcfg else OVConfig(dtype=variant.weight_format)
    with atomic_dir(out_dir) as tmp:
        log.info("exporting %s -> OpenVINO %s (%s)", source_dir, key, _describe(variant))
        try:
            # The two calls optimum-cli's `export openvino` makes (optimum/commands/export/openvino.py).
            main_export(
                model_name_or_path=str(source_dir),
                output=tmp,
                task=TASK,
                framework="pt",
                trust_remote_code=False,
                ov_config=ov_config,
                stateful=True,
                convert_tokenizer=True,
                library_name="transformers",
            )
            if calibration is not None:
                _quantize_with_calibration(source_dir, tmp, qcfg, calibration[1], variant.num_samples)
            elif qcfg:
                _main_quantize(
                    model_name_or_path=str(source_dir),
                    task=TASK,
                    library_name="transformers",
                    quantization_config=qcfg,
                    output=tmp,
                    cache_dir=None,
                    trust_remote_code=False,
                )
        except Exception as err:  # noqa: BLE001
            if type(err).__name__ == "InvalidGroupSizeError":
                raise ExportError(
                    f"params.yaml: openvino.variants.{key}.group_size = {variant.group_size}: {err}",
                    fix=f"choose a group size dividing every layer's input width, or set "
                    f"openvino.variants.{key}.group_size_fallback: adjust",
                ) from None
            raise ExportError(f"OpenVINO export of variant {key!r} failed: {type(err).__name__}: {err}",
                              fix="see the log above; check the source checkpoint loads with transformers") from err
        missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
        if missing:
            raise ExportError(f"OpenVINO export of {key!r} did not write {', '.join(missing)}",
                              fix="check optimum-intel / openvino-tokenizers are installed (see pyproject.toml)")
        record = {
            "backend": BACKEND,
            "variant": key,
            "params": variant.model_dump(mode="json"),
            "algorithm": variant.algorithm,
            "calibration": _calibration_record(calibration, variant.num_samples),
            "effective": effective_settings(tmp / "openvino_model.xml"),
            **({"npu_blob": precompile_npu_blob(tmp)} if variant.target_device == "npu" else {}),
            "toolchain": versions(),
        }
        write_json(tmp / EXPORT_JSON, record)
    return record


def _calibration_record(calibration, num_samples: int | None) -> dict[str, Any] | None:
    if calibration is None:
        return None
    meta, windows = calibration
    used = min(num_samples or len(windows), len(windows))
    return {**meta, "samples_used": used}


def _quantize_with_calibration(source_dir: Path, folder: Path, qcfg: dict[str, Any], windows, num_samples: int | None):
    """``_main_quantize`` with our own calibration windows instead of a Hub dataset name.

    Same steps as optimum-intel's ``_main_quantize`` (load the exported IR, ``_apply_quantization``) and
    the same dataset shape as its list-of-strings path (``_prepare_causal_lm_calibration_data``:
    ``prepare_dataset`` then ``nncf.Dataset(..., model.prepare_inputs)``), but from token windows.
    """
    import nncf
    import torch
    from optimum.gptq.data import prepare_dataset
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(folder, compile=False, use_cache=True)
    n = min(num_samples or len(windows), len(windows))
    items = [{"input_ids": torch.as_tensor(w[None, :]), "attention_mask": torch.ones(1, len(w), dtype=torch.long)}
             for w in windows[:n]]
    dataset = nncf.Dataset(prepare_dataset(items), lambda x: model.prepare_inputs(**x))
    log.info("data-aware compression with %d calibration windows x %d tokens", n, windows.shape[1])
    model._apply_quantization(
        {**qcfg, "num_samples": n},
        compile_only=False,
        compile_model=False,
        model_name_or_path=str(source_dir),
        trust_remote_code=False,
        save_directory=folder,
        immediate_save=True,
        calibration_dataset=dataset,
    )


def precompile_npu_blob(folder: Path) -> dict[str, Any]:
    """With an NPU present, let openvino-genai compile the model for it, caching the compiled blob
    inside the artifact (``npu_cache/``) so NPU machines skip the compile; without one, skip with a note."""
    import openvino as ov

    devices = ov.Core().available_devices
    if not any(d.startswith("NPU") for d in devices):
        note = f"skipped: no NPU device on the build machine (OpenVINO devices: {', '.join(devices)})"
        log.info("NPU blob precompile %s", note)
        return {"status": "skipped", "note": note}
    import openvino_genai as ov_genai

    cache = folder / "npu_cache"
    cache.mkdir()
    ov_genai.LLMPipeline(str(folder), "NPU", CACHE_DIR=str(cache))
    blobs = sorted(p.name for p in cache.iterdir())
    return {"status": "compiled", "cache_dir": "npu_cache", "files": blobs}


def _describe(v: OpenVINOVariant) -> str:
    if v.weight_format == "int4":
        return f"int4 {'sym' if v.sym else 'asym'} group {v.group_size} ratio {v.ratio} {v.algorithm}"
    return v.weight_format


def effective_settings(xml: Path) -> dict[str, Any]:
    """What the IR really holds: NNCF's recorded settings and the weight constants' formats.

    Group sizes are read from the compressed constants' shapes ([out, groups, group] for grouped,
    [out, in] for channel-wise), not from rt_info, which records the *requested* group size even
    when a fallback changed it.
    """
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    nncf: dict[str, str] = {}
    if model.has_rt_info(["nncf", "weight_compression"]):
        for k in model.get_rt_info()["nncf"]["weight_compression"]:
            nncf[str(k)] = model.get_rt_info(["nncf", "weight_compression", str(k)]).astype(str)
    if model.has_rt_info(["nncf", "version"]):
        nncf["nncf_version"] = model.get_rt_info(["nncf", "version"]).astype(str)
    counts: collections.Counter[str] = collections.Counter()
    params_by_type: collections.Counter[str] = collections.Counter()
    group_sizes: collections.Counter[str] = collections.Counter()
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        et = op.get_element_type().get_type_name()
        shape = list(op.get_output_shape(0))
        n = 1
        for d in shape:
            n *= d
        if n < 4096:  # scales, zero points, small constants
            continue
        counts[et] += 1
        params_by_type[et] += n
        if et in ("u4", "i4", "nf4"):
            group_sizes[str(shape[-1]) if len(shape) == 3 else "channel"] += 1
    total = sum(params_by_type.values()) or 1
    return {
        "nncf": nncf,
        "weight_constants": dict(sorted(counts.items())),
        "weight_share_by_type": {k: round(v / total, 4) for k, v in sorted(params_by_type.items())},
        "int4_group_sizes": dict(sorted(group_sizes.items())),
    }
