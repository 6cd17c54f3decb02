"""Checks that a folder is a complete, loadable Phi-3 checkpoint — before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..fsutil import SafetensorsError, safetensors_header

SOURCE_JSON = "source.json"
SUPPORTED_ARCHITECTURES = ("Phi3ForCausalLM",)
SUPPORTED_MODEL_TYPES = ("phi3",)

# What the download takes from a repo: weights as safetensors only, never pickles or remote code.
ALLOW_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "LICENSE*",
    "NOTICE*",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def read_model_config(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise SourceError(f"{cfg}: missing", fix="the model folder must contain the transformers config.json")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SourceError(f"{cfg}: not valid JSON ({err})", fix="re-download the model") from None


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor entries of a safetensors file, after the header and size check (catches truncated and
    non-safetensors files without loading them); :class:`SourceError` naming the file otherwise."""
    try:
        return safetensors_header(path)
    except SafetensorsError as err:
        raise SourceError(f"{path}: {err}", fix="delete it and download again") from None


def check_phi3_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Raise :class:`SourceError` unless ``config`` (a config.json, read from ``where``) is a Phi-3 model's."""
    archs = config.get("architectures") or []
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES or not set(archs) & set(SUPPORTED_ARCHITECTURES):
        raise SourceError(
            f"{where}: model_type {config.get('model_type')!r}, architectures {archs!r} is not a Phi-3 checkpoint",
            fix="point model.repo_id / model.path at a Phi-3 family model (model_type phi3, Phi3ForCausalLM)",
        )
    return config


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """Raise :class:`SourceError` unless ``folder`` holds a Phi-3 safetensors checkpoint."""
    config = check_phi3_config(read_model_config(folder), str(folder / "config.json"))
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        raise SourceError(
            f"{folder}: no *.safetensors weights" + (f" (only pickled weights: {', '.join(pickles)})" if pickles else ""),
            fix="use a revision that ships safetensors; pickled .bin weights are refused because loading them runs code",
        )
    index = folder / "model.safetensors.index.json"
    if index.exists():
        wanted = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(w for w in wanted if not (folder / w).exists())
        if missing:
            raise SourceError(f"{index}: shards missing: {', '.join(missing)}", fix="download the model again")
    for w in weights:
        read_safetensors_header(w)
    if not any((folder / t).is_file() for t in TOKENIZER_FILES):
        raise SourceError(
            f"{folder}: no tokenizer (neither tokenizer.json nor tokenizer.model)",
            fix="the checkpoint must include its tokenizer files",
        )
    if not (folder / "tokenizer_config.json").is_file():
        raise SourceError(f"{folder / 'tokenizer_config.json'}: missing", fix="include the tokenizer config")
    return config
