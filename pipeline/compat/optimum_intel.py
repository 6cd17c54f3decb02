"""optimum-intel: its private quantization entry points and the one log record it writes in error.

* :func:`main_quantize`: ``optimum.exporters.openvino.__main__._main_quantize``, the second step of
  ``optimum-cli export openvino`` (compress an exported IR); no public equivalent takes an IR folder.
* :func:`apply_quantization`: ``OVModelForCausalLM._apply_quantization``, what ``_main_quantize`` calls,
  here with the pipeline's own calibration dataset instead of a Hub dataset name.
* :func:`quiet_offline_format_probe`: a logging filter for the format probe's false alarm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..toolchain import drop_log_records
from .gate import Gate

GATE = Gate("optimum-intel", ("2.1.0",), __name__)

TASK = "text-generation-with-past"
PROBE_LOGGER = "optimum.intel.openvino.modeling_base"
PROBE_MESSAGE = "Could not infer whether the model was already converted"


def main_quantize(source_dir: Path, output: Path, quantization_config: dict[str, Any]) -> None:
    """Compress the IR in ``output`` (exported from ``source_dir``) as ``optimum-cli export openvino`` does."""
    from optimum.exporters.openvino.__main__ import _main_quantize

    _main_quantize(
        model_name_or_path=str(source_dir),
        task=TASK,
        library_name="transformers",
        quantization_config=quantization_config,
        output=output,
        cache_dir=None,
        trust_remote_code=False,
    )


def apply_quantization(model: Any, quantization_config: dict[str, Any], source_dir: Path, save_directory: Path,
                       calibration_dataset: Any) -> None:
    """``_main_quantize``'s own call on a loaded ``OVModelForCausalLM``, with a ready ``nncf.Dataset``."""
    model._apply_quantization(
        quantization_config,
        compile_only=False,
        compile_model=False,
        model_name_or_path=str(source_dir),
        trust_remote_code=False,
        save_directory=save_directory,
        immediate_save=True,
        calibration_dataset=calibration_dataset,
    )


def quiet_offline_format_probe() -> None:
    """optimum-intel 2.1's ``from_pretrained`` probes whether a model is already OpenVINO IR; with
    ``HF_HUB_OFFLINE`` it reads the probe's answer from the Hub cache even for a local folder, fails, logs
    "Could not infer whether the model was already converted ..." and then loads the folder as IR anyway
    (the pipeline only loads IR folders it wrote). That one record is dropped; nothing else is (idempotent)."""
    drop_log_records(PROBE_LOGGER, PROBE_MESSAGE)
