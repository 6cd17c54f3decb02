"""OpenVINO IR export through optimum-intel's Python API (the code path ``optimum-cli export openvino`` runs).

Every compression option is passed explicitly, so optimum-intel's hidden per-model default
configs never apply, and the effective settings are read back from the IR itself (NNCF's rt_info
plus the shapes and element types of the compressed weight constants) because optimum-intel's
``openvino_config.json`` does not record them.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Final

from ..compat import nncf as nncf_compat
from ..compat import optimum_intel
from ..compat.optimum_intel import TASK, quiet_offline_format_probe
from ..config import OpenVINOVariant, Params, layer_widths
from ..errors import ExportError
from ..records import EXPORT_JSON, OpenVINOBaseRecord, OpenVINOExportRecord
from ..fsutil import MappedPages, atomic_dir
from ..sources.checkpoint import read_model_config
from ..toolchain import disable_telemetry, versions

log = logging.getLogger(__name__)


BACKEND: Final = "openvino"
BASE: Final = "base"  # the base IR's name in records (folder: artifacts/openvino-base)
# any INT4 config: main_export reads only that one is set (no size-based INT8 default, no KV_CACHE_PRECISION)
BASE_QUANTIZATION = {"bits": 4, "sym": True, "group_size": -1, "ratio": 1.0}
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


def from_base(variant: OpenVINOVariant) -> bool:
    """Whether the variant is compressed from the shared base IR (every format but fp32, which optimum-intel
    traces from an fp32 PyTorch load of its own)."""
    return variant.weight_format != "fp32"


def _source_dtype(model_config: dict[str, Any]) -> str | None:
    """The checkpoint's stored dtype (transformers 4 writes ``torch_dtype``, 5 writes ``dtype``)."""
    return model_config.get("torch_dtype") or model_config.get("dtype")


def _main_export(source_dir: Path, out: Path, ov_config) -> None:
    """optimum-cli's first call (optimum/commands/export/openvino.py): load + trace PyTorch, write the IR."""
    import warnings

    import torch
    from optimum.exporters.openvino.__main__ import main_export

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # expected while tracing
    main_export(
        model_name_or_path=str(source_dir),
        output=out,
        task=TASK,
        framework="pt",
        trust_remote_code=False,
        ov_config=ov_config,
        stateful=True,
        convert_tokenizer=True,
        library_name="transformers",
    )


def export_base(params: Params, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The model's one PyTorch load and trace: the uncompressed IR every OpenVINO variant is made from.

    This is ``main_export`` exactly as ``optimum-cli export openvino --weight-format int4|int8`` runs it
    before its ``_main_quantize``: the source loaded in its own dtype (bf16 for Phi-3, 16-bit traced),
    written uncompressed, with a quantization config set so optimum-intel's size-based INT8 default
    (models over 1B parameters) does not apply. Which INT4/INT8 settings follow does not change this IR
    (optimum reads only that *a* quantization config is set), so one base serves every variant.
    """
    disable_telemetry()
    from optimum.intel.openvino.configuration import OVConfig

    model_config = read_model_config(source_dir)
    with atomic_dir(out_dir) as tmp:
        log.info("exporting %s -> the OpenVINO base IR (one PyTorch load + trace for every variant)", source_dir)
        try:
            _main_export(source_dir, tmp, OVConfig(quantization_config=dict(BASE_QUANTIZATION)))
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"OpenVINO export of the base IR failed: {type(err).__name__}: {err}",
                              fix="see the log above; check the source checkpoint loads with transformers") from err
        _require_files(tmp, "the base IR")
        ship_source_config(source_dir, tmp)
        record = OpenVINOBaseRecord(
            backend=BACKEND,
            variant=BASE,
            source_dtype=_source_dtype(model_config),
            effective=effective_settings(tmp / "openvino_model.xml"),
            toolchain=versions(),
        )
        record.write(tmp / EXPORT_JSON)
    return record.dump()


def quantization_config(variant: OpenVINOVariant) -> dict[str, Any] | None:
    """The weight-compression dict optimum-cli builds for the variant's flags (``prepare_wc_config``),
    with every option explicit: params.yaml in optimum-intel's terms."""
    if not variant.compressed:
        return None
    is_int8 = variant.weight_format == "int8"
    return {
        "bits": 8 if is_int8 else 4,
        "ratio": 1.0 if is_int8 else variant.ratio,
        "sym": bool(variant.sym),
        "group_size": -1 if is_int8 else variant.group_size,
        "all_layers": variant.all_layers,
        "dataset": None,  # data-aware variants pass the calibration windows as a calibration_dataset object
        "num_samples": variant.num_samples,
        "quant_method": "awq" if variant.awq else "default",
        "sensitivity_metric": variant.sensitivity_metric,
        "scale_estimation": True if variant.scale_estimation else None,
        "gptq": True if variant.gptq else None,
        "lora_correction": True if variant.lora_correction else None,
        "dtype": variant.weight_format,
        "backup_precision": variant.backup_precision,
        "statistics_path": None,
        "group_size_fallback": variant.group_size_fallback,
        **({"ignored_scope": variant.ignored_scope.model_dump()} if variant.ignored_scope is not None else {}),
    }


def export(params: Params, key: str, source_dir: Path, out_dir: Path,
           calibration_dir: Path | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Export variant ``key`` of ``params.openvino.variants`` from the checkpoint in ``source_dir``.

    Every variant but fp32 is compressed from the base IR in ``base_dir`` (default
    ``artifacts/openvino-base``, written by :func:`export_base`) with the same calls optimum-cli makes
    after its own trace, so the weights are those of ``optimum-cli export openvino`` (tests/test_openvino.py
    compares them byte for byte). Data-aware variants (``dataset: calibration``) read the calibration
    stage's windows from ``calibration_dir`` (default ``artifacts/calibration``).
    """
    from .. import paths

    quiet_offline_format_probe()  # optimum-intel loads the compressed IR back (the NPU variant's blob step)
    variant = params.openvino.variants[key]
    model_config = read_model_config(source_dir)
    variant.check_model(key, layer_widths(model_config))
    base = None
    if from_base(variant):
        base = Path(base_dir or paths.openvino_base_dir())
        if not (base / EXPORT_JSON).is_file():
            raise ExportError(f"{base}: no OpenVINO base IR (every OpenVINO variant but fp32 is compressed from it)",
                              fix="run `dvc repro` (or `aipc export openvino-base`) first")
    calibration = None
    if variant.data_aware:
        from ..calibration import load_calibration

        calibration = load_calibration(calibration_dir or paths.calibration_dir())
    disable_telemetry()

    from optimum.intel.openvino.configuration import OVConfig

    qcfg = quantization_config(variant)
    with atomic_dir(out_dir) as tmp:
        log.info("exporting %s -> OpenVINO %s (%s)", base or source_dir, key, _describe(variant))
        try:
            if base is None:
                _main_export(source_dir, tmp, OVConfig(dtype=variant.weight_format))
            elif qcfg:
                # optimum-cli's second call, on a copy of the base: it replaces openvino_model.xml/.bin
                # (a new file, renamed over), so hard links share the base's bytes until then
                _copy_base(base, tmp, link_model=True)
                if calibration is not None:
                    _quantize_with_calibration(source_dir, tmp, qcfg, calibration[1], variant.num_samples)
                else:
                    optimum_intel.main_quantize(source_dir, tmp, qcfg)
                _unshare(base, tmp)
            else:
                _copy_base(base, tmp, link_model=False)
                fp16_from_base(base, tmp)
        except Exception as err:  # noqa: BLE001
            if nncf_compat.is_invalid_group_size(err):
                raise ExportError(
                    f"params.yaml: openvino.variants.{key}.group_size = {variant.group_size}: {err}",
                    fix=f"choose a group size dividing every layer's input width, or set "
                    f"openvino.variants.{key}.group_size_fallback: adjust",
                ) from None
            raise ExportError(f"OpenVINO export of variant {key!r} failed: {type(err).__name__}: {err}",
                              fix="see the log above; check the source checkpoint loads with transformers") from err
        _require_files(tmp, repr(key))
        ship_source_config(source_dir, tmp)
        record = OpenVINOExportRecord(
            backend=BACKEND,
            variant=key,
            params=variant.model_dump(mode="json"),
            algorithm=variant.algorithm,
            from_base=base is not None,
            calibration=_calibration_record(calibration, variant.num_samples),
            effective=effective_settings(tmp / "openvino_model.xml"),
            **({"npu_blob": precompile_npu_blob(tmp)} if variant.target_device == "npu" else {}),
            toolchain=versions(),
        )
        record.write(tmp / EXPORT_JSON)
    return record.dump()


MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")


def ship_source_config(source_dir: Path, folder: Path) -> None:
    """Put the source's ``config.json`` back, byte for byte, over the one optimum wrote.

    optimum saves the config as the installed transformers re-serializes it (transformers 5:
    ``rope_parameters`` instead of ``rope_scaling``, ``dtype``, defaults added). A consumer on
    transformers 4.x then reads a LongRoPE model with ``rope_scaling=None``, silently dropping its long
    factors. The IR does not read config.json at run time; the runtimes (and transformers 5) read the
    source's as well, so the artifact is validated with exactly the file it ships.
    """
    shutil.copyfile(source_dir / "config.json", folder / "config.json")


def _require_files(folder: Path, what: str) -> None:
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ExportError(f"OpenVINO export of {what} did not write {', '.join(missing)}",
                          fix="check optimum-intel / openvino-tokenizers are installed (see pyproject.toml)")


def _copy_base(base: Path, dest: Path, link_model: bool) -> None:
    """The base's files in ``dest``: copies of everything but the model IR, which is hard-linked
    (``link_model``: the compression replaces it) or left out (FP16 writes its own)."""
    for src in sorted(base.iterdir()):
        if src.name == EXPORT_JSON or not src.is_file():
            continue
        if src.name in MODEL_FILES:
            if not link_model:
                continue
            try:
                os.link(src, dest / src.name)
                continue
            except OSError:  # another file system, or links refused: copy
                pass
        shutil.copy2(src, dest / src.name)


def _unshare(base: Path, dest: Path) -> None:
    """Replace any file of ``dest`` that is still a hard link of the base's by a copy, so the artifact
    never shares an inode with the base (DVC moves artifact files into its cache)."""
    for f in dest.iterdir():
        twin = base / f.name
        if f.is_file() and twin.is_file() and os.path.samefile(f, twin):
            log.warning("%s was not rewritten by the compression; copying it out of the base", f.name)
            f.unlink()
            shutil.copy2(twin, f)


def bf16_bits_to_f16(bits):
    """bf16 values given as their raw 16-bit patterns (uint16 array) -> float16 array, by torch's cast.

    torch's bf16 -> fp16 cast is what optimum-cli's fp16 export applies to a bf16 checkpoint (it loads
    the model with ``dtype=float16``): exact widening to f32, then round to nearest even, overflow to
    inf. Multi-threaded and vectorized, without a float32 copy: 0.36 s for 200 M values where the
    numpy path (``(bits << 16).view(f32)`` assigned to f16) took 23.8 s on this machine. Equal to that
    numpy path for every one of the 65536 bf16 patterns except NaN payloads (NaN either way;
    tests/test_openvino.py checks all of them).
    """
    import warnings

    import torch

    with warnings.catch_warnings():  # OpenVINO's constant data is a read-only view: torch warns, and only reads it
        warnings.simplefilter("ignore", UserWarning)
        src = torch.from_numpy(bits.view("uint16"))
    return src.view(torch.bfloat16).to(torch.float16).numpy()


def fp16_from_base(base: Path, dest: Path) -> None:
    """``optimum-cli export openvino --weight-format fp16`` from the base IR instead of a second trace.

    optimum-cli loads a bf16 source as fp16 and saves with ``compress_to_fp16``; the base holds the
    bf16 weights. Converting each bf16 constant to f16 with torch's cast (:func:`bf16_bits_to_f16`, the
    cast optimum's fp16 load applies) and saving with ``compress_to_fp16`` gives the same
    ``openvino_model.bin`` byte for byte and the same logits (tests/test_openvino.py). Also as
    optimum does for unquantized models: the ``KV_CACHE_PRECISION=f16`` runtime option. (optimum also
    rewrites ``config.json`` to record the fp16 load; the artifact ships the source's, see
    :func:`ship_source_config`.)
    """
    import numpy as np
    import openvino as ov
    from openvino import opset13

    model = ov.Core().read_model(str(base / "openvino_model.xml"))  # the .bin is memory-mapped
    release = MappedPages(base / "openvino_model.bin")
    converted = []  # the f16 arrays the new constants share (no copy into OpenVINO): alive until saved
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.bf16:
            continue
        # OpenVINO hands bf16 data out as its raw 16-bit patterns (numpy has no bfloat16)
        bits = np.asarray(op.data).view(np.uint16)
        f16 = bf16_bits_to_f16(bits)
        release(bits)  # the bf16 pages are read for the last time: drop them, or they and the f16 copy add up
        del bits
        new = opset13.constant(f16, dtype=ov.Type.f16, shared_memory=True)
        converted.append(f16)
        new.set_friendly_name(op.get_friendly_name())
        new.output(0).get_tensor().set_names(op.output(0).get_tensor().get_names())
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(new.output(0))
    model.validate_nodes_and_infer_types()
    model.set_rt_info("f16", ["runtime_options", "KV_CACHE_PRECISION"])
    log.info("fp16 from the base IR: %d bf16 weight constants converted to f16", len(converted))
    ov.save_model(model, str(dest / "openvino_model.xml"), compress_to_fp16=True)
    del model, converted


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

    # a str: optimum-intel calls str methods on it (a Path fails its format probe with "Path.replace() takes 2
    # positional arguments"); offline, the probe fails anyway and says so: quiet_offline_format_probe
    quiet_offline_format_probe()
    model = OVModelForCausalLM.from_pretrained(str(folder), compile=False, use_cache=True)
    n = min(num_samples or len(windows), len(windows))
    items = [{"input_ids": torch.as_tensor(w[None, :]), "attention_mask": torch.ones(1, len(w), dtype=torch.long)}
             for w in windows[:n]]
    dataset = nncf.Dataset(prepare_dataset(items), lambda x: model.prepare_inputs(**x))
    log.info("data-aware compression with %d calibration windows x %d tokens", n, windows.shape[1])
    optimum_intel.apply_quantization(model, {**qcfg, "num_samples": n}, source_dir, folder, dataset)


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
        if n < 4096 or (len(shape) == 3 and shape[-1] == 1):  # small constants; scales / asym zero points [out, groups, 1]
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
