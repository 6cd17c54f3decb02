"""Checks that a folder is a complete, loadable Phi-3 checkpoint — before any model is loaded."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import SourceError

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


def _check_safetensors(path: Path) -> None:
    """Header and size check: catches truncated and non-safetensors files without loading them."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SourceError(f"{path}: truncated ({size} bytes)", fix="delete it and download again")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise SourceError(f"{path}: not a safetensors file (bad header length)", fix="download it again")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SourceError(f"{path}: corrupt safetensors header", fix="download it again") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise SourceError(
            f"{path}: truncated or padded: {size} bytes on disk, header describes {8 + n + end}",
            fix="delete it and download again",
        )


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """Raise :class:`SourceError` unless ``folder`` holds a Phi-3 safetensors checkpoint."""
    config = read_model_config(folder)
    archs = config.get("architectures") or []
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES or not set(archs) & set(SUPPORTED_ARCHITECTURES):
        raise SourceError(
            f"{folder / 'config.json'}: model_type {config.get('model_type')!r}, architectures {archs!r} "
            "is not a Phi-3 checkpoint",
            fix="point model.repo_id / model.path at a Phi-3 family model (model_type phi3, Phi3ForCausalLM)",
        )
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
        _check_safetensors(w)
    if not any((folder / t).is_file() for t in TOKENIZER_FILES):
        raise SourceError(
            f"{folder}: no tokenizer (neither tokenizer.json nor tokenizer.model)",
            fix="the checkpoint must include its tokenizer files",
        )
    if not (folder / "tokenizer_config.json").is_file():
        raise SourceError(f"{folder / 'tokenizer_config.json'}: missing", fix="include the tokenizer config")
    return config
