"""Smoke generation: greedy chat generations that fail loudly on broken artifacts."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path
from typing import Any

from aipc.pipeline.config import Params
from aipc.pipeline.errors import ValidationFailed
from aipc.pipeline.records import SmokeRecord

from .runners import Generation, open_runner

log = logging.getLogger(__name__)

PROMPTS_FILE = Path(__file__).parent / "data" / "smoke_prompts.json"


def load_prompts(path: Path = PROMPTS_FILE) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def check_generation(gen: Generation, expect_any: list[str], max_repeat: float) -> list[str]:
    """The failed checks of one generation (empty list = passed)."""
    failures = []
    text = gen.text
    if not text.strip():
        failures.append("empty output")
    if "\ufffd" in text:
        failures.append("output holds U+FFFD (invalid UTF-8 bytes decoded)")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in "\n\t\r"]
    if bad:
        failures.append(f"output holds {len(bad)} control/surrogate characters")
    ratio = repeated_ngram_ratio(text)
    if ratio > max_repeat:
        failures.append(f"degenerate repetition: repeated 4-gram ratio {ratio:.2f} > {max_repeat}")
    if gen.stopped_by not in ("eos", "max_new_tokens"):
        failures.append(f"stopped by {gen.stopped_by!r}")
    if expect_any and not any(w.lower() in text.lower() for w in expect_any):
        failures.append(f"none of {expect_any} in the answer")
    return failures


def run_smoke(params: Params, backend: str, folder: Path, out: Path) -> dict[str, Any]:
    """Generate for every prompt, write the metrics JSON, raise ValidationFailed on any failure."""
    from aipc.pipeline import preflight

    preflight.require(f"smoke-{backend}@{folder.name}", preflight.estimate_artifact(backend, folder))
    results = []
    with open_runner(backend, folder, params) as runner:
        runtime = runner.runtime_settings()
        for item in load_prompts():
            gen = runner.generate(item["messages"], params.smoke.max_new_tokens)
            failures = check_generation(gen, item.get("expect_any", []), params.smoke.max_repeat_ngram_ratio)
            log.info("[%s] %s -> %r%s", backend, item["id"], gen.text[:80],
                     f"  FAILED: {'; '.join(failures)}" if failures else "")
            results.append({
                "id": item["id"],
                "messages": item["messages"],
                "text": gen.text,
                "new_tokens": len(gen.token_ids),
                "token_ids": gen.token_ids,
                "stopped_by": gen.stopped_by,
                "repeated_4gram_ratio": round(repeated_ngram_ratio(gen.text), 4),
                "first_token_s": round(gen.first_token_s, 4),
                "tokens_per_s": round(len(gen.token_ids) / gen.total_s, 2) if gen.total_s > 0 else None,
                "failures": failures,
                "passed": not failures,
                "notes": gen.notes,
            })
    passed = all(r["passed"] for r in results)
    record = {
        "backend": backend,
        "artifact": str(folder),
        "passed": passed,
        "prompts_passed": sum(r["passed"] for r in results),
        "prompts_total": len(results),
        "max_new_tokens": params.smoke.max_new_tokens,
        "runtime": runtime,
        "results": results,
    }
    must_pass = params.validation.gates_for(backend, folder.name)["smoke_must_pass"]
    record["must_pass"] = must_pass
    SmokeRecord.model_validate(record).write(out)
    if not passed and not must_pass:
        log.warning("smoke failed for %s, but %s is false: recorded only", folder,
                    params.validation.gate_key(backend, folder.name, "smoke_must_pass"))
    elif not passed:
        lines = [f"{r['id']}: {'; '.join(r['failures'])}" for r in results if not r["passed"]]
        raise ValidationFailed(f"smoke generation failed for {folder}:\n  " + "\n  ".join(lines),
                               fix=f"inspect {out}; re-export the artifact or revisit its quantization params")
    return record
