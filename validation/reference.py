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

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.fsutil import atomic_dir, read_json, sha256_file, write_json

from .accuracy import WindowReference, reference_from_logits

log = logging.getLogger(__name__)

EVAL_DIR = Path(__file__).parent / "data" / "eval"
REFERENCE_NPZ = "reference.npz"
REFERENCE_JSON = "reference.json"


def eval_text(name: str) -> str:
    return (EVAL_DIR / f"{name}.txt").read_text(encoding="utf-8")


def eval_windows(tokenizer, params: Params) -> dict[str, np.ndarray]:
    """{text name: [windows_per_text, window] token ids} — the fixed evaluation protocol."""
    v = params.validation
    need = v.window * v.windows_per_text
    out = {}
    for name in v.texts:
        ids = tokenizer.encode(eval_text(name), add_special_tokens=False)
        if len(ids) < need:
            raise ConfigError(
                f"params.yaml: validation.window x windows_per_text = {need} tokens, but {name} has {len(ids)}",
                fix="lower validation.window or validation.windows_per_text",
            )
        out[name] = np.asarray(ids[:need], dtype=np.int32).reshape(v.windows_per_text, v.window)
    return out


def build_reference(params: Params, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    from .runners.transformers import TransformersRunner
    from .smoke import load_prompts

    from pipeline import preflight

    v = params.validation
    preflight.require("reference", preflight.estimate_export("reference", v.reference_dtype, source_dir))
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"protocol": v.model_dump(mode="json", exclude={"gates"}), "texts": {}, "generations": {}}
    with atomic_dir(out_dir) as tmp, TransformersRunner(source_dir, v.reference_dtype) as runner:
        windows = eval_windows(runner.tok, params)
        for name, wins in windows.items():
            nll = []
            for w, ids in enumerate(tqdm(wins, desc=f"reference {name}", leave=False)):
                ref = reference_from_logits(ids, runner.logits(ids.tolist()), v.topk)
                for field in ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob"):
                    arrays[f"{name}/{w}/{field}"] = getattr(ref, field)
                nll.append(-ref.target_logprob.astype(np.float64))
            ppl = float(np.exp(np.concatenate(nll).mean()))
            meta["texts"][name] = {"windows": len(wins), "perplexity": ppl,
                                   "sha256": sha256_file(EVAL_DIR / f"{name}.txt")}
            log.info("reference perplexity on %s: %.3f", name, ppl)
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
