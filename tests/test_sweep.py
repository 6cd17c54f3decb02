"""The sweep: the shipped grid validates against the params schema (no model), Pareto flags and
the RTN-loss-recovered column are computed right, and the outputs are written."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aipc.pipeline.config import deep_merge
from aipc.pipeline.errors import ConfigError
from aipc.validation.sweep import Grid, finish, load_grid, pareto, point_params

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text()))


def test_shipped_grid_validates_on_the_embedded_profile():
    grid = load_grid(ROOT / "configs" / "sweep-int4.yaml")
    points = point_params(copy.deepcopy(EMBEDDED), grid)
    names = {f"{b}/{n}" for b, n, _ in points}
    assert {grid.baseline, grid.fp_point} <= names
    algos = {(p.openvino.variants or p.ortgenai.variants)[n].algorithm for _, n, p in points}
    assert {"rtn", "awq", "scale_estimation", "awq+scale_estimation", "scale_estimation+gptq", "lora_correction",
            "k_quant"} <= algos
    for _b, n, p in points:  # each point is one variant of one backend
        assert len(p.openvino.variants) + len(p.ortgenai.variants) == 1, n


def test_a_refused_grid_point_fails_before_anything_runs(tmp_path):
    g = yaml.safe_load((ROOT / "configs" / "sweep-int4.yaml").read_text())
    g["openvino"]["points"]["bad"] = {"gptq": True}  # no dataset
    g["openvino"]["points"]["worse"] = {"group_size": 128}  # does not divide 576
    with pytest.raises(ConfigError) as exc:
        point_params(copy.deepcopy(EMBEDDED), Grid.model_validate(g))
    assert "points.bad" in str(exc.value) and "dataset is None" in str(exc.value)
    assert "variants.worse" in str(exc.value) and "does not divide" in str(exc.value)


def test_pareto_front():
    rows = [{"s": 1, "q": 3}, {"s": 2, "q": 2}, {"s": 3, "q": 1}, {"s": 3, "q": 2.5}, {"s": 1, "q": 3.5}]
    assert pareto(rows, "s", "q") == {0, 1, 2}


def test_finish_writes_table_plot_and_recovered_share(tmp_path):
    grid = Grid(baseline="openvino/rtn", fp_point="openvino/fp16")
    def row(point, algo, size, t, ppl, kl=0.2):
        return {"backend": "openvino", "point": point, "algorithm": algo, "size_mb": size, "export_s": t,
                "worst_ppl_ratio": ppl, "top1_agreement": 0.9, "kl_mean": kl, "kl_p99": 1.0}
    rows = [row("fp16", "none", 260, 30, 1.0, kl=0.0), row("rtn", "rtn", 90, 40, 1.3),
            row("awq", "awq", 90, 60, 1.15), row("slow-bad", "gptq", 95, 200, 1.35, kl=0.3)]
    finish(rows, grid, tmp_path)
    by = {r["point"]: r for r in rows}
    assert by["awq"]["recovered_vs_baseline"] == pytest.approx(0.5)
    assert by["rtn"]["recovered_vs_baseline"] == 0 and by["awq"]["kl_recovered_vs_baseline"] == 0
    assert by["slow-bad"]["kl_recovered_vs_baseline"] == pytest.approx(-0.5)
    assert "+50% / +0%" in (tmp_path / "sweep.md").read_text()
    assert by["awq"]["pareto_size"] and not by["rtn"]["pareto_size"] and not by["slow-bad"]["pareto_size"]
    assert by["rtn"]["pareto_time"] and by["awq"]["pareto_time"] and not by["slow-bad"]["pareto_time"]
    assert "pareto_size" not in by["fp16"]
    for f in ("sweep.json", "sweep.csv", "sweep.md", "sweep.png"):
        assert (tmp_path / f).stat().st_size > 100, f
    assert "| openvino/awq | awq |" in (tmp_path / "sweep.md").read_text()


def test_sweep_command_is_registered():
    from click.testing import CliRunner

    from aipc.stages.cli import main

    r = CliRunner().invoke(main, ["sweep", "--help"])
    assert r.exit_code == 0 and "--grid" in r.output
