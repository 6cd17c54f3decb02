"""Summary across artifacts: a table (``aipc report``), DVC plot data and a PNG chart.

The ``report`` stage of dvc.yaml (``aipc report --dvc``) writes what DVC shows of a run:
``metrics/accuracy/<artifact>.json`` (a few numbers per artifact: `dvc metrics show metrics/accuracy` is the
accuracy table; the full records stay in metrics/validate/ and metrics/smoke/) and the plot data
``metrics/plots/{accuracy,gates,cost}.json`` that `dvc plots show` / `dvc plots diff` render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aipc.pipeline.fsutil import write_json
from aipc.pipeline.records import CostRecord, ValidateRecord

COLUMNS = ("artifact", "passed", "worst_ppl_ratio", "top1_agreement", "kl_mean", "kl_p99", "tokenizer", "prefix")


def collect(metrics_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((metrics_dir / "validate").glob("*.json")):
        r = ValidateRecord.read(f)
        acc = r.accuracy
        rows.append({
            "artifact": f.stem,
            "passed": r.passed,
            "worst_ppl_ratio": acc.get("worst_ppl_ratio"),
            "top1_agreement": acc.get("top1_agreement"),
            "kl_mean": acc.get("kl_mean"),
            "kl_p99": acc.get("kl_p99"),
            "tokenizer": r.tokenizer_parity.get("encode_agreement"),
            "prefix": r.smoke.prefix_agreement,
            "texts": {k: v["perplexity"] for k, v in acc.get("texts", {}).items()},
            "reference_texts": {k: v["reference_perplexity"] for k, v in acc.get("texts", {}).items()},
        })
    return rows


# the compact per-artifact metric: what `dvc metrics show` prints, one row per artifact
SUMMARY = tuple(c for c in COLUMNS if c != "artifact")


def summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(row[k], 4) if isinstance(row[k], float) else row[k]) for k in SUMMARY if row[k] is not None}


def _ideal(op: str, metric: str) -> float:
    """The value a perfect artifact would have for a gate's metric: 1 for agreements (``>=`` gates) and
    ratios to the reference, 0 for divergences."""
    return 1.0 if op == ">=" or metric.endswith("ratio") else 0.0


def gate_use(metrics_dir: Path) -> list[dict[str, Any]]:
    """Each numeric gate of each artifact as the share of its allowed distance from ideal that the
    artifact uses: |value - ideal| / |threshold - ideal| (<= 1 passes; a gate at its ideal allows nothing,
    so any distance there is 'inf' and a fail). Yes/no gates (smoke passed, chat template equal) are left
    out: they are in the table."""
    out = []
    for f in sorted((Path(metrics_dir) / "validate").glob("*.json")):
        for g in ValidateRecord.read(f).gates:
            if isinstance(g.value, bool) or not isinstance(g.value, (int, float)):
                continue
            ideal = _ideal(g.op, g.metric)
            room, used = abs(g.threshold - ideal), abs(g.value - ideal)
            share = used / room if room else (0.0 if used == 0 else float("inf"))
            out.append({"artifact_gate": f"{f.stem} {g.gate}", "artifact": f.stem, "gate": g.gate,
                        "share_of_limit": round(min(share, 10.0), 4), "value": g.value,
                        "threshold": g.threshold, "passed": g.passed})
    return out


def write_dvc_outputs(metrics_dir: Path) -> list[Path]:
    """The ``report`` stage's outputs: metrics/accuracy/<artifact>.json and metrics/plots/{accuracy,gates,
    cost}.json (each folder written whole, then renamed into place)."""
    from aipc.pipeline.cost import collect as collect_costs
    from aipc.pipeline.fsutil import atomic_dir

    metrics_dir = Path(metrics_dir)
    rows = collect(metrics_dir)
    with atomic_dir(metrics_dir / "accuracy") as tmp:
        for r in rows:
            write_json(tmp / f"{r['artifact']}.json", summary(r))
    plots = metrics_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    write_json(plots / "accuracy.json", [{k: r[k] for k in COLUMNS if k != "passed"} for r in rows])
    write_json(plots / "gates.json", gate_use(metrics_dir))
    write_json(plots / "cost.json", [c.model_dump(include={"stage", "wall_s", "cpu_s", "peak_rss_mib"})
                                     for c in sorted(collect_costs(metrics_dir), key=lambda c: c.stage)])
    return [metrics_dir / "accuracy", plots / "accuracy.json", plots / "gates.json", plots / "cost.json"]


def table(rows: list[dict[str, Any]]) -> str:
    def cell(v):
        if isinstance(v, bool) or v is None:
            return {True: "yes", False: "NO", None: "-"}[v]
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    grid = [list(COLUMNS)] + [[cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cost_table(costs: list[CostRecord]) -> str:
    """Per-stage wall time and peak RSS (metrics/cost/*.json, written by `aipc --cost-metrics`)."""
    grid = [["stage", "wall s", "cpu s", "peak RSS MiB", "of which children"]]
    for c in sorted(costs, key=lambda c: c.stage):
        grid.append([c.stage, f"{c.wall_s:.1f}", f"{c.cpu_s:.1f}", f"{c.peak_rss_mib:.0f}",
                     f"{c.peak_rss_children_mib:.0f}"])
    grid.append(["total", f"{sum(c.wall_s for c in costs):.1f}", f"{sum(c.cpu_s for c in costs):.1f}",
                 f"{max(c.peak_rss_mib for c in costs):.0f} (max)", ""])
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_plots(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """metrics/plots/accuracy.png (the DVC plot data beside it is the report stage's: write_dvc_outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [r["artifact"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.5 * len(rows) + 2.2), sharey=True)
    for ax, key, label, good in ((axes[0], "worst_ppl_ratio", "perplexity / reference (worst text)", 1.0),
                                 (axes[1], "top1_agreement", "top-1 agreement with reference", 1.0),
                                 (axes[2], "kl_mean", "mean KL(reference ‖ artifact)", 0.0)):
        vals = [r[key] or 0.0 for r in rows]
        colors = ["tab:green" if r["passed"] else "tab:red" for r in rows]
        ax.barh(names, vals, color=colors)
        ax.axvline(good, color="black", lw=0.8, ls="--")
        ax.set_title(label, fontsize=10)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Accuracy per artifact (green: all gates passed)", fontsize=11)
    fig.tight_layout()
    png = out_dir / "accuracy.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
