"""Versions of the toolchain that made an artifact (recorded in every export record and manifest)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "aipc",
    "torch",
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "optimum",
    "optimum-intel",
    "nncf",
    "openvino",
    "openvino-tokenizers",
    "openvino-genai",
    "onnxruntime",
    "onnxruntime-genai",
    "onnx",
)


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def disable_telemetry() -> None:
    """Decline OpenVINO telemetry for this process only (no consent file is written).

    Offline, openvino-telemetry forks a child per event (~2x export time), its sender starts a thread
    (which would make the stage worker's fork unsafe), and a pipeline should not phone home from
    users' CI. This is the library's own "declined" path.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # pragma: no cover - telemetry package absent: nothing to disable
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
