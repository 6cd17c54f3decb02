"""The validate stage: accuracy against the reference, tokenizer parity, smoke verdict, gates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aipc.pipeline.config import LONG_GATES, Params
from aipc.pipeline.errors import ValidationFailed
from aipc.pipeline.records import SmokeRecord, ValidateRecord

from . import gates as gates_mod
from .accuracy import prefix_agreement, score_window, summarize
from .reference import load_long_window, load_reference
from .runners import open_runner
from .tokenizers import tokenizer_parity

log = logging.getLogger(__name__)


def measure_accuracy(runner, windows: dict[str, list], label: str) -> dict[str, Any]:
    """Perplexity ratio, top-1 agreement and KL of ``runner`` against the reference windows."""
    from tqdm import tqdm

    per_text, all_scores = {}, []
    for name, wins in windows.items():
        scores = [score_window(w, runner.logits(w.ids.tolist())) for w in tqdm(wins, desc=f"{label} {name}", leave=False)]
        per_text[name] = summarize(scores)
        all_scores += scores
        log.info("%s %s: ppl %.3f (reference %.3f, ratio %.4f), top-1 %.3f, KL mean %.4f",
                 label, name, per_text[name]["perplexity"], per_text[name]["reference_perplexity"],
                 per_text[name]["ppl_ratio"], per_text[name]["top1_agreement"], per_text[name]["kl_mean"])
    pooled = summarize(all_scores)
    return {
        "texts": per_text,
        "worst_ppl_ratio": max(t["ppl_ratio"] for t in per_text.values()),
        "top1_agreement": pooled["top1_agreement"],
        "kl_mean": pooled["kl_mean"],
        "kl_p99": pooled["kl_p99"],
        "positions": pooled["positions"],
    }


def validate_artifact(params: Params, backend: str, variant: str, folder: Path, source_dir: Path,
                      reference_dir: Path, smoke_json: Path, out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from aipc.pipeline import preflight

    preflight.require(f"validate-{backend}@{variant}", preflight.estimate_artifact(backend, folder))
    meta, windows = load_reference(reference_dir)
    source_tok = AutoTokenizer.from_pretrained(source_dir)
    record: dict[str, Any] = {"backend": backend, "variant": variant, "artifact": str(folder),
                              "protocol": meta["protocol"],
                              # the evaluation texts (file, sha256) the reference was computed on
                              "texts": {k: {f: t[f] for f in ("file", "sha256") if f in t}
                                        for k, t in meta["texts"].items()}}
    thresholds = params.validation.gates_for(backend, variant)
    # the long window costs one long forward pass: scored where a gate reads it (FP16 artifacts by default)
    long_ref = load_long_window(reference_dir, meta) if any(
        thresholds.get(g) is not None for g in LONG_GATES) else None
    with open_runner(backend, folder, params) as runner:
        record["accuracy"] = measure_accuracy(runner, windows, f"{backend}-{variant}")
        record["tokenizer_parity"] = tokenizer_parity(runner, source_tok)
        if long_ref is not None:
            score = summarize([score_window(long_ref, runner.logits(long_ref.ids.tolist()))])
            record["long_context"] = {**score, "tokens": int(len(long_ref.ids)),
                                      "original_max_position_embeddings": meta["long"]["original_max_position_embeddings"]}
            log.info("%s-%s long window (%d tokens): top-1 %.3f, KL mean %.4f", backend, variant, len(long_ref.ids),
                     score["top1_agreement"], score["kl_mean"])
    smoke = SmokeRecord.read(smoke_json) if smoke_json.is_file() else None
    prefix = []
    if smoke is not None:
        for r in smoke.results:
            ref_ids = meta["generations"].get(r.id, {}).get("token_ids", [])
            prefix.append(prefix_agreement(ref_ids, r.token_ids, params.validation.prefix_tokens))
    record["smoke"] = {
        "passed": bool(smoke and smoke.passed),
        "prefix_agreement": sum(prefix) / len(prefix) if prefix else None,
        "file": str(smoke_json),
    }
    record["gates"] = gates_mod.evaluate(record, thresholds)
    record["passed"] = all(g["passed"] for g in record["gates"])
    ValidateRecord.model_validate(record).write(out)
    if not record["passed"]:
        lines = gates_mod.describe_failures(record["gates"])
        raise ValidationFailed(
            f"{backend}/{variant} failed {len(lines)} gate(s):\n  " + "\n  ".join(lines),
            fix=f"metrics are in {out}; fix the artifact (re-export with other params) or, with a reason, "
            f"change validation.gates.variants.{backend}-{variant} in params.yaml",
        )
    return record
