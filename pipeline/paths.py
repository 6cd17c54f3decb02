"""Where each stage reads and writes, relative to the workspace root (the folder of dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path("artifacts")
METRICS = Path("metrics")


def source_dir() -> Path:
    return ARTIFACTS / "source"


def artifact_dir(backend: str, variant: str) -> Path:
    return ARTIFACTS / backend / variant


def smoke_metrics(backend: str, variant: str) -> Path:
    return METRICS / "smoke" / f"{backend}-{variant}.json"


def reference_dir() -> Path:
    return ARTIFACTS / "reference"


def validate_metrics(backend: str, variant: str) -> Path:
    return METRICS / "validate" / f"{backend}-{variant}.json"
