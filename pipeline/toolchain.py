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
