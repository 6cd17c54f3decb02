"""``aipc sweep``: which INT4 should we ship? Export + measure each point of a grid, one at a time.

Each grid point is a variant of the params schema (so it is validated, and refused combinations are
reported, before any model loads), exported with the pipeline's own exporters and measured with the
validation harness's accuracy function against the workspace's reference. The result is a table
(CSV + JSON) and a plot of quality against size and export time with the Pareto fronts marked.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from aipc.pipeline.config import CalibrationSection, _Strict, deep_merge, parse_params
from aipc.pipeline.errors import ConfigError
from aipc.pipeline.fsutil import write_json

log = logging.getLogger(__name__)

SIZE_SUFFIXES = (".bin", ".onnx", ".data")  # weights files (IR .bin, ONNX + external data)


class BackendGrid(_Strict):
    base: dict[str, Any] = Field(default_factory=dict, description="variant keys shared by every point")
    points: dict[str, dict[str, Any] | None] = Field(min_length=1, description="name -> overrides of base")


class Grid(_Strict):
    """A sweep grid (configs/sweep-int4.yaml)."""

    calibration: CalibrationSection | None = None
    baseline: str = Field(description="the RTN point whose loss the others are compared with")
    fp_point: str = Field(description="the FP16 point (the loss is measured from it)")
    openvino: BackendGrid | None = None
    ortgenai: BackendGrid | None = None


def load_grid(path: Path) -> Grid:
    from pydantic import ValidationError

    from aipc.pipeline.config import format_validation_error

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return Grid.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, str(path)), fix="see configs/sweep-int4.yaml") from None


def point_params(base_params: dict[str, Any], grid: Grid) -> list[tuple[str, str, Any]]:
    """[(backend, point, Params)] with one variant each; every point is validated before anything runs."""
    out, errors = [], []
    for backend in ("openvino", "ortgenai"):
        bg = getattr(grid, backend)
        if bg is None:
            continue
        for name, override in bg.points.items():
            variant = deep_merge(bg.base, override or {})
            data = deep_merge(base_params, {"calibration": grid.calibration.model_dump() if grid.calibration else None})
            data["openvino"] = {**data["openvino"], "variants": {name: variant} if backend == "openvino" else {}}
            data["ortgenai"] = {"variants": {name: variant} if backend == "ortgenai" else {}}
            data["validation"] = {**data["validation"], "gates": {**data["validation"]["gates"], "variants": {}}}
            try:
                out.append((backend, name, parse_params(data, origin=f"grid {backend}.points.{name}")))
            except ConfigError as err:
                errors.append(err.message)
    if errors:
        raise ConfigError("\n".join(errors), fix="fix these grid points (schema: pipeline/config.py)")
    names = [f"{b}/{n}" for b, n, _ in out]
    for ref in (grid.baseline, grid.fp_point):
        if ref not in names:
            raise ConfigError(f"grid names {ref!r} as baseline/fp_point, but it is no point", fix=f"one of {names}")
    return out


def _size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in SIZE_SUFFIXES
               and "tokenizer" not in p.name)


def pareto(rows: list[dict[str, Any]], x: str, y: str) -> set[int]:
    """Indices of rows not dominated in (x smaller, y smaller)."""
    front = set()
    for i, a in enumerate(rows):
        if not any((b[x] <= a[x] and b[y] <= a[y]) and (b[x] < a[x] or b[y] < a[y]) for b in rows):
            front.add(i)
    return front


def run_sweep(grid_path: Path, params_path: Path, source_dir: Path, reference_dir: Path, out_dir: Path,
              only: list[str] | None = None, keep: bool = False) -> list[dict[str, Any]]:
    from aipc.pipeline.export import openvino as ov_export
    from aipc.pipeline.export import ortgenai as ort_export

    from aipc.pipeline.calibration import build_calibration
    from .reference import load_reference
    from .runners import open_runner
    from .validate import measure_accuracy

    grid = load_grid(grid_path)
    base = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    points = point_params(base, grid)
    if only:
        points = [p for p in points if f"{p[0]}/{p[1]}" in only or p[1] in only]
    out_dir.mkdir(parents=True, exist_ok=True)
    _, windows = load_reference(reference_dir)
    cal_dir = out_dir / "calibration"
    if grid.calibration is not None and any(p.openvino.variants.get(n) is not None and p.openvino.variants[n].data_aware
                                            for _, n, p in points):
        build_calibration(points[0][2], source_dir, cal_dir)
    base_dir = out_dir / "openvino-base"  # one trace for every OpenVINO point (export once, compress many)
    if any(b == "openvino" and ov_export.from_base(p.openvino.variants[n]) for b, n, p in points):
        from aipc.pipeline.export import run_base

        run_base(points[0][2], source_dir, base_dir)
    rows_path = out_dir / "sweep.json"
    rows: list[dict[str, Any]] = []
    if only and rows_path.is_file():  # re-measure some points; keep the others' rows
        from aipc.pipeline.fsutil import read_json

        redo = {f"{b}/{n}" for b, n, _ in points}
        rows = [r for r in read_json(rows_path) if f"{r['backend']}/{r['point']}" not in redo]
    for backend, name, params in points:
        folder = out_dir / "artifacts" / backend / name
        shutil.rmtree(folder, ignore_errors=True)
        log.info("sweep %s/%s: export", backend, name)
        t0 = time.perf_counter()
        if backend == "openvino":
            record = ov_export.export(params, name, source_dir, folder, calibration_dir=cal_dir, base_dir=base_dir)
            variant = params.openvino.variants[name]
        else:
            record = ort_export.export(params, name, source_dir, folder)
            variant = params.ortgenai.variants[name]
        export_s = time.perf_counter() - t0
        with open_runner(backend, folder, params) as runner:
            acc = measure_accuracy(runner, windows, f"{backend}-{name}")
        rows.append({
            "backend": backend, "point": name, "algorithm": record["algorithm"],
            "settings": {k: v for k, v in variant.model_dump(mode="json").items() if v not in (None, False)},
            "size_mb": round(_size_bytes(folder) / 2**20, 2), "export_s": round(export_s, 1),
            "worst_ppl_ratio": round(acc["worst_ppl_ratio"], 4),
            **{f"ppl_ratio_{t}": round(v["ppl_ratio"], 4) for t, v in acc["texts"].items()},
            "top1_agreement": round(acc["top1_agreement"], 4), "kl_mean": round(acc["kl_mean"], 4),
            "kl_p99": round(acc["kl_p99"], 3),
        })
        write_json(rows_path, rows)  # progress survives an interrupted sweep
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not keep:
        shutil.rmtree(base_dir, ignore_errors=True)
    finish(rows, grid, out_dir)
    return rows


def finish(rows: list[dict[str, Any]], grid: Grid, out_dir: Path) -> None:
    """Loss recovered vs the baseline, Pareto flags, then sweep.{json,csv,md,png}."""
    by = {f"{r['backend']}/{r['point']}": r for r in rows}
    fp, rtn = by.get(grid.fp_point), by.get(grid.baseline)
    for r in rows:
        r["recovered_vs_baseline"] = r["kl_recovered_vs_baseline"] = None
        if fp and rtn and rtn["worst_ppl_ratio"] > fp["worst_ppl_ratio"]:
            loss = rtn["worst_ppl_ratio"] - fp["worst_ppl_ratio"]
            r["recovered_vs_baseline"] = round((rtn["worst_ppl_ratio"] - r["worst_ppl_ratio"]) / loss, 3)
        if fp and rtn and rtn["kl_mean"] > fp["kl_mean"]:
            loss = rtn["kl_mean"] - fp["kl_mean"]
            r["kl_recovered_vs_baseline"] = round((rtn["kl_mean"] - r["kl_mean"]) / loss, 3)
    int4 = [r for r in rows if r["algorithm"] != "none"]
    for key, x in (("pareto_size", "size_mb"), ("pareto_time", "export_s")):
        front = pareto(int4, x, "worst_ppl_ratio")
        for i, r in enumerate(int4):
            r[key] = i in front
    write_json(out_dir / "sweep.json", rows)
    cols = ["backend", "point", "algorithm", "size_mb", "export_s", "worst_ppl_ratio", "top1_agreement", "kl_mean",
            "kl_p99", "recovered_vs_baseline", "kl_recovered_vs_baseline", "pareto_size", "pareto_time"]
    with open(out_dir / "sweep.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out_dir / "sweep.md").write_text(markdown_table(rows, grid), encoding="utf-8")
    plot(rows, out_dir / "sweep.png")


def markdown_table(rows: list[dict[str, Any]], grid: Grid) -> str:
    head = ("| backend/point | algorithm | size MB | export s | worst ppl ratio | top-1 | KL mean | KL p99 | "
            f"RTN loss recovered, ppl / KL (vs {grid.baseline}) | Pareto (size / time) |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in sorted(rows, key=lambda r: (r["backend"], r["worst_ppl_ratio"])):
        rec = "–"
        if r.get("recovered_vs_baseline") is not None and r["algorithm"] != "none":
            kl = r.get("kl_recovered_vs_baseline")
            rec = f"{r['recovered_vs_baseline']:+.0%} / " + ("–" if kl is None else f"{kl:+.0%}")
        par = "–" if r["algorithm"] == "none" else \
            ("size " if r.get("pareto_size") else "") + ("time" if r.get("pareto_time") else "")
        lines.append(f"| {r['backend']}/{r['point']} | {r['algorithm']} | {r['size_mb']:.1f} | {r['export_s']:.0f} | "
                     f"{r['worst_ppl_ratio']:.4f} | {r['top1_agreement']:.3f} | {r['kl_mean']:.4f} | {r['kl_p99']:.2f} | "
                     f"{rec} | {par.strip() or 'no'} |")
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int4 = [r for r in rows if r["algorithm"] != "none"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, x, flag, label in ((axes[0], "size_mb", "pareto_size", "weights size (MB)"),
                               (axes[1], "export_s", "pareto_time", "export time (s)")):
        for backend, marker in (("openvino", "o"), ("ortgenai", "s")):
            pts = [r for r in int4 if r["backend"] == backend]
            ax.scatter([r[x] for r in pts], [r["worst_ppl_ratio"] for r in pts], marker=marker, label=backend, alpha=0.8)
            for r in pts:
                ax.annotate(r["point"], (r[x], r["worst_ppl_ratio"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((r for r in int4 if r.get(flag)), key=lambda r: r[x])
        ax.plot([r[x] for r in front], [r["worst_ppl_ratio"] for r in front], "k--", lw=1, drawstyle="steps-post",
                label="Pareto front")
        ax.scatter([r[x] for r in front], [r["worst_ppl_ratio"] for r in front], s=120, facecolors="none",
                   edgecolors="k")
        ax.set_xlabel(label)
        ax.set_ylabel("worst perplexity ratio to the reference (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("INT4 settings: quality vs size and export time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
