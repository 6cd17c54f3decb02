"""``aipc bench``: first-token latency, decode speed and peak RSS of every artifact on this machine's
CPU, through each artifact's own runtime (the same runners as smoke/validate: openvino-genai with
the params' LATENCY / NUM_STREAMS=1 runtime settings, onnxruntime-genai, the NPU library's CPU
fallback), with transformers fp32 on the source checkpoint as the baseline measured in the same run.

This machine is noisy, so the results are read as ratios to that baseline. Every artifact runs in
its own spawned process (one model in memory at a time; its peak RSS is that process's), greedy,
over several prompt lengths; the median of ``repeats`` runs is kept. Output: ``metrics/bench.json``
(a DVC metric, listed at the top level of dvc.yaml) and ``metrics/plots/bench.png``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

from aipc.pipeline.config import BenchOptions, Params
from aipc.pipeline.errors import PipelineError, ValidationFailed
from aipc.pipeline.fsutil import write_json

log = logging.getLogger(__name__)

BASELINE = ("transformers", "fp32")


def prompts_of_lengths(source_dir: Path, lengths: list[int]) -> dict[int, str]:
    """User messages of about ``n`` tokens (source tokenizer), cut from the first evaluation text."""
    from transformers import AutoTokenizer

    from .reference import eval_text

    tok = AutoTokenizer.from_pretrained(source_dir)
    ids = tok.encode(eval_text("python_docs"), add_special_tokens=False)
    out = {}
    for n in lengths:
        if n > len(ids):
            raise PipelineError(f"bench prompt length {n} is longer than the benchmark text ({len(ids)} tokens)",
                                fix=f"use prompt lengths up to {len(ids)}")
        out[n] = "Summarize this text:\n" + tok.decode(ids[:n])
    return out


def _run_one(backend: str, folder: str, params_json: str, prompts: dict[int, str], new_tokens: int,
             repeats: int, queue) -> None:
    """In a spawned process: open the artifact, warm up, time every prompt length."""
    import resource

    try:
        from aipc.pipeline.config import Params

        from .runners import open_runner
        from .runners.transformers import TransformersRunner

        params = Params.model_validate_json(params_json)
        t0 = time.perf_counter()
        runner = TransformersRunner(Path(folder), "float32") if backend == "transformers" else \
            open_runner(backend, Path(folder), params)
        with runner:
            runner.generate([{"role": "user", "content": "Hello"}], 4)  # compile / warm caches
            load_s = time.perf_counter() - t0
            rows = []
            for n, text in prompts.items():
                runs = []
                for _ in range(repeats):
                    g = runner.generate([{"role": "user", "content": text}], new_tokens)
                    k = len(g.token_ids)
                    decode = (k - 1) / (g.total_s - g.first_token_s) if k > 1 and g.total_s > g.first_token_s else None
                    runs.append((g.first_token_s, decode, k))
                rows.append({
                    "prompt_tokens": n,
                    "first_token_s": round(statistics.median(r[0] for r in runs), 4),
                    "decode_tokens_per_s": (round(statistics.median(r[1] for r in runs if r[1]), 2)
                                            if any(r[1] for r in runs) else None),
                    "new_tokens": min(r[2] for r in runs),
                })
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        queue.put({"ok": True, "load_s": round(load_s, 2), "peak_rss_mib": round(peak, 1), "results": rows})
    except Exception as err:  # noqa: BLE001 - reported by the parent as a ValidationFailed
        queue.put({"ok": False, "error": f"{type(err).__name__}: {err}"})


def measure(backend: str, folder: Path, params: Params, prompts: dict[int, str], new_tokens: int,
            repeats: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_one, args=(backend, str(folder), params.model_dump_json(), prompts,
                                              new_tokens, repeats, queue))
    proc.start()
    import queue as queue_mod

    result = None
    try:
        while result is None:
            try:
                result = queue.get(timeout=5)
            except queue_mod.Empty:
                if not proc.is_alive():  # crashed without reporting (a segfault, the OOM killer)
                    result = {"ok": False, "error": f"the bench process died (exit code {proc.exitcode})"}
    finally:
        proc.join(timeout=60)
    if not result["ok"]:
        raise ValidationFailed(f"bench of {backend} {folder} failed: {result['error']}",
                               fix=f"run `aipc smoke {backend} {folder.name}` to check the artifact runs")
    return result


def run_bench(params: Params, b: BenchOptions, artifacts: list[tuple[str, str, Path]], source_dir: Path,
              out_json: Path, out_png: Path | None) -> dict[str, Any]:
    prompts = prompts_of_lengths(source_dir, b.prompt_lengths)
    log.info("bench: baseline transformers fp32 on %s", source_dir)
    base = measure("transformers", source_dir, params, prompts, b.new_tokens, b.repeats)
    rows = {"transformers-fp32": {**base, "ratios": None}}
    for backend, variant, folder in artifacts:
        log.info("bench: %s-%s", backend, variant)
        r = measure(backend, folder, params, prompts, b.new_tokens, b.repeats)
        r["ratios"] = _ratios(r, base)
        rows[f"{backend}-{variant}"] = r
    record = {
        "protocol": b.model_dump(mode="json"),
        "baseline": "transformers-fp32",
        "artifacts": rows,
    }
    from aipc.pipeline.cost import machine

    record["machine"] = machine()
    write_json(out_json, record)
    if out_png is not None:
        write_chart(record, out_png)
    return record


def _ratios(r: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Artifact / baseline: first-token latency (lower is better), decode speed (higher), peak RSS."""
    out: dict[str, Any] = {"peak_rss": round(r["peak_rss_mib"] / base["peak_rss_mib"], 3)}
    for row, brow in zip(r["results"], base["results"]):
        n = row["prompt_tokens"]
        out[f"first_token@{n}"] = round(row["first_token_s"] / brow["first_token_s"], 3)
        if row["decode_tokens_per_s"] and brow["decode_tokens_per_s"]:
            out[f"decode_speed@{n}"] = round(row["decode_tokens_per_s"] / brow["decode_tokens_per_s"], 3)
    return out


def write_chart(record: dict[str, Any], png: Path) -> Path:
    """Per-backend latency charts (the seed's style): first-token latency and decode speed per prompt length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["artifacts"])
    lengths = [r["prompt_tokens"] for r in next(iter(record["artifacts"].values()))["results"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(names) * len(lengths) / 2 + 3))
    width = 0.8 / len(lengths)
    for ax, key, label in ((axes[0], "first_token_s", "first-token latency (s, lower is better)"),
                           (axes[1], "decode_tokens_per_s", "decode speed (tokens/s, higher is better)")):
        for j, n in enumerate(lengths):
            vals = [next(x for x in record["artifacts"][a]["results"] if x["prompt_tokens"] == n)[key] or 0
                    for a in names]
            ax.barh([i + j * width for i in range(len(names))], vals, height=width, label=f"{n}-token prompt")
        ax.set_yticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    rss = [record["artifacts"][a]["peak_rss_mib"] / 1024 for a in names]
    axes[2].barh(names, rss, color="tab:gray")
    axes[2].invert_yaxis()
    axes[2].set_title("peak RSS (GiB)", fontsize=10)
    m = record.get("machine", {})
    fig.suptitle(f"aipc bench: CPU, {m.get('cpus')} cores, {m.get('mem_total_gib')} GiB "
                 f"(baseline: transformers fp32, same run)", fontsize=11)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
