"""Backend exporters: one module per backend, the same shape each (export + effective settings)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

BACKENDS = ("openvino", "ortgenai", "npu")


def run(params, backend: str, key: str, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Export variant ``key`` of ``<backend>.variants``: check the key, the memory preflight, then the backend."""
    from .. import preflight
    from ..errors import ConfigError

    variants = getattr(params, backend).variants
    if key not in variants:
        raise ConfigError(f"params.yaml: {backend}.variants has no {key!r}", fix=f"use one of: {', '.join(variants)}")
    estimate = preflight.estimate_export(backend, variants[key].memory_kind, Path(source_dir))
    preflight.require(f"export-{backend}@{key}", estimate)
    return importlib.import_module(f"{__name__}.{backend}").export(params, key, Path(source_dir), Path(out_dir))


def run_base(params, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The OpenVINO base IR (one PyTorch load + trace per model) that every OpenVINO variant but fp32 compresses."""
    from .. import preflight
    from . import openvino

    preflight.require("export-openvino-base", preflight.estimate_export("openvino", "base", Path(source_dir)))
    return openvino.export_base(params, Path(source_dir), Path(out_dir))
