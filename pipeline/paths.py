"""Where each stage reads and writes, relative to the workspace root (the folder of dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path("artifacts")
METRICS = Path("metrics")


def source_dir() -> Path:
    return ARTIFACTS / "source"


def artifact_dir(backend: str, variant: str) -> Path:
    return ARTIFACTS / backend / variant


def existing_artifact(backend: str, variant: str) -> Path:
    """The artifact folder, or a SourceError that says how to build it."""
    from .errors import SourceError

    folder = artifact_dir(backend, variant)
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such artifact",
                          fix=f"run `dvc repro` (or `aipc export {backend} {variant}`) first")
    return folder


def smoke_metrics(backend: str, variant: str) -> Path:
    return METRICS / "smoke" / f"{backend}-{variant}.json"


def reference_dir() -> Path:
    return ARTIFACTS / "reference"


def validate_metrics(backend: str, variant: str) -> Path:
    return METRICS / "validate" / f"{backend}-{variant}.json"


def calibration_dir() -> Path:
    return ARTIFACTS / "calibration"


def openvino_base_dir() -> Path:
    """The uncompressed IR every OpenVINO variant is compressed from (stage export-openvino-base)."""
    return ARTIFACTS / "openvino-base"
