"""The reference stage: the original model (transformers, fp32 on CPU) once over the evaluation texts.

Stores, compactly, what every comparison needs (see validation/accuracy.py): per window the token
ids, the log-probability of each true next token, the top-1 ids and the top-k log-softmax; plus the
reference's greedy tokens for the smoke prompts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from aipc.pipeline.config import Params
from aipc.pipeline.errors import ConfigError
from aipc.pipeline.fsutil import atomic_dir, read_json, write_json

from .accuracy import WindowReference, reference_from_logits
from aipc.pipeline.texts import read_text, text_label, text_record

log = logging.getLogger(__name__)

REFERENCE_NPZ = "reference.npz"
REFERENCE_JSON = "reference.json"


def eval_text(entry: str) -> str:
    """One entry of validation.texts: a shipped text's name or a user's file (pipeline/texts.py)."""
    return read_text("validation", entry)


def eval_windows(tokenizer, params: Params) -> dict[str, np.ndarray]:
    """{text name: [windows_per_text, window] token ids} — the fixed evaluation protocol."""
    v = params.validation
    need = v.window * v.windows_per_text
    out = {}
    for entry in v.texts:
        ids = tokenizer.encode(eval_text(entry), add_special_tokens=False)
        if len(ids) < need:
            raise ConfigError(
                f"params.yaml: validation.texts: {entry} is {len(ids)} tokens long with this model's tokenizer, too "
                f"short for the protocol: validation.window x windows_per_text = {v.window} x {v.windows_per_text} "
                f"= {need} tokens from its start",
                fix=f"give a longer text (about {need * 5} characters of prose), or lower validation.window or "
                    "validation.windows_per_text (for every text)",
            )
        out[text_label(entry)] = np.asarray(ids[:need], dtype=np.int32).reshape(v.windows_per_text, v.window)
    return out


LONG = "long"  # the long window's key in reference.npz / reference.json


def long_window_ids(tokenizer, params: Params, source_dir: Path) -> tuple[np.ndarray, int] | None:
    """(token ids, original context) of the long window, for a LongRoPE model (config.json: ``rope_scaling``
    with ``long_factor``, and ``original_max_position_embeddings``); None for any other model (Phi-3-mini-4k
    records an original context too, but no scaling) or with ``validation.long_window`` null.

    The window is the start of the evaluation texts joined in their order, ``long_window`` tokens, one
    forward pass: its positions past the original context are where the long rope factors apply."""
    from aipc.pipeline.sources.checkpoint import read_model_config

    v = params.validation
    cfg = read_model_config(source_dir)
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    original = cfg.get("original_max_position_embeddings") or scaling.get("original_max_position_embeddings")
    if not v.long_window or not isinstance(scaling, dict) or "long_factor" not in scaling or not isinstance(original, int):
        return None
    if v.long_window <= original:
        raise ConfigError(f"params.yaml: validation.long_window = {v.long_window} does not go past the model's "
                          f"original context ({original} tokens): its long rope factors would never be scored",
                          fix=f"set validation.long_window above {original} (e.g. {original + 104})")
    maxpos = cfg.get("max_position_embeddings")
    if isinstance(maxpos, int) and v.long_window > maxpos:
        raise ConfigError(f"params.yaml: validation.long_window = {v.long_window} is longer than the model's "
                          f"context window ({maxpos} tokens)", fix=f"set validation.long_window to at most {maxpos}")
    ids = tokenizer.encode("\n\n".join(eval_text(n) for n in v.texts), add_special_tokens=False)
    if len(ids) < v.long_window:
        raise ConfigError(f"params.yaml: validation.long_window = {v.long_window} tokens, but the evaluation texts "
                          f"{', '.join(v.texts)} hold {len(ids)}", fix=f"set validation.long_window to at most {len(ids)}")
    return np.asarray(ids[:v.long_window], dtype=np.int32), original


def build_reference(params: Params, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    from .runners.transformers import TransformersRunner
    from .smoke import load_prompts

    from aipc.pipeline import preflight

    v = params.validation
    preflight.require("reference", preflight.estimate_export("reference", v.reference_dtype, source_dir))
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"protocol": v.model_dump(mode="json", exclude={"gates"}), "texts": {}, "generations": {}}
    with atomic_dir(out_dir) as tmp, TransformersRunner(source_dir, v.reference_dtype) as runner:
        windows = eval_windows(runner.tok, params)
        files = {text_label(e): text_record("validation", e) for e in v.texts}
        for name, wins in windows.items():
            nll = []
            for w, ids in enumerate(tqdm(wins, desc=f"reference {name}", leave=False)):
                ref = reference_from_logits(ids, runner.logits(ids.tolist()), v.topk)
                for field in ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob"):
                    arrays[f"{name}/{w}/{field}"] = getattr(ref, field)
                nll.append(-ref.target_logprob.astype(np.float64))
            ppl = float(np.exp(np.concatenate(nll).mean()))
            meta["texts"][name] = {"windows": len(wins), "perplexity": ppl, **files[name]}
            log.info("reference perplexity on %s: %.3f", name, ppl)
        long = long_window_ids(runner.tok, params, source_dir)
        if long is not None:
            ids, original = long
            log.info("reference: the long window, %d tokens (LongRoPE, original context %d)", len(ids), original)
            ref = reference_from_logits(ids, runner.logits(ids.tolist()), v.topk)
            for field in ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob"):
                arrays[f"{LONG}/0/{field}"] = getattr(ref, field)
            meta[LONG] = {"tokens": int(len(ids)), "original_max_position_embeddings": original,
                          "perplexity": float(np.exp(-ref.target_logprob.astype(np.float64).mean()))}
        for item in load_prompts():
            gen = runner.generate(item["messages"], v.prefix_tokens)
            meta["generations"][item["id"]] = {"token_ids": gen.token_ids, "text": gen.text}
        np.savez_compressed(tmp / REFERENCE_NPZ, **arrays)
        meta["source_sha256"] = {k: v["sha256"] for k, v in read_json(source_dir / "source.json")["files"].items()}
        write_json(tmp / REFERENCE_JSON, meta)
    return meta


def load_reference(ref_dir: Path) -> tuple[dict[str, Any], dict[str, list[WindowReference]]]:
    meta = read_json(ref_dir / REFERENCE_JSON)
    data = np.load(ref_dir / REFERENCE_NPZ)
    windows: dict[str, list[WindowReference]] = {}
    for name, info in meta["texts"].items():
        windows[name] = [
            WindowReference(**{f: data[f"{name}/{w}/{f}"] for f in
                               ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob")})
            for w in range(info["windows"])
        ]
    return meta, windows


def load_long_window(ref_dir: Path, meta: dict[str, Any]) -> WindowReference | None:
    """The long window of a LongRoPE model's reference (None when the reference has none)."""
    if not meta.get(LONG):
        return None
    data = np.load(ref_dir / REFERENCE_NPZ)
    return WindowReference(**{f: data[f"{LONG}/0/{f}"] for f in ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob")})
