"""One small interface to every artifact, whatever the backend.

``open_runner(backend, folder, params)`` returns a :class:`~validation.runners.base.Runner`.
Backends are imported lazily so that the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.errors import ConfigError

from .base import Generation, Runner

BACKENDS = ("openvino", "ortgenai", "npu")


def open_runner(backend: str, folder: Path, params: Params) -> Runner:
    if backend == "openvino":
        from .openvino import OpenVINORunner

        return OpenVINORunner(folder, params.openvino.runtime)
    if backend == "ortgenai":
        from .ortgenai import OrtGenAIRunner

        return OrtGenAIRunner(folder)
    if backend == "npu":
        from .npu import NPURunner

        return NPURunner(folder, params.npu)
    raise ConfigError(f"unknown backend {backend!r}", fix=f"use one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Generation", "Runner", "open_runner"]
