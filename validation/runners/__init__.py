"""One small interface to every artifact, whatever the backend.

``open_runner(backend, folder, params)`` returns a :class:`~validation.runners.base.Runner`.
Backends are imported lazily so that the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path

from aipc.pipeline.config import Params
from aipc.pipeline.errors import ConfigError

from .base import Generation, Runner

BACKENDS = ("openvino", "ortgenai", "npu")


def open_runner(backend: str, folder: Path, params: Params) -> Runner:
    """The runner of ``backend`` on the artifact in ``folder``; the device it chose goes to the stage's cost line."""
    from aipc.pipeline.cost import note_device

    runner: Runner
    if backend == "openvino":
        from .openvino import OpenVINORunner

        runner = OpenVINORunner(folder, params.openvino.runtime)
    elif backend == "ortgenai":
        from .ortgenai import OrtGenAIRunner

        runner = OrtGenAIRunner(folder)
    elif backend == "npu":
        from .npu import NPURunner

        runner = NPURunner(folder, params.npu)
    else:
        raise ConfigError(f"unknown backend {backend!r}", fix=f"use one of: {', '.join(BACKENDS)}")
    note_device(runner.device_used())
    return runner


__all__ = ["BACKENDS", "Generation", "Runner", "open_runner"]
