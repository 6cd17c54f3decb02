"""``aipc sweep``: export + measure a grid of INT4 settings (not a DVC stage; run in a workspace)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sweep")
@click.option("--grid", "grid_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=Path("configs/sweep-int4.yaml"), show_default=True, help="The grid of settings.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("metrics/sweep"), show_default=True)
@click.option("--only", multiple=True,
              help="Run only these points (backend/point or point; repeatable); other rows in OUT/sweep.json are kept.")
@click.option("--keep", is_flag=True, help="Keep each exported artifact (default: delete after measuring).")
@click.pass_obj
def sweep(obj, grid_path: Path, out_dir: Path, only: tuple[str, ...], keep: bool) -> None:
    """Which INT4 should we ship? Export and measure every grid point one at a time -> OUT/sweep.{csv,json,md,png}.

    Needs artifacts/source and artifacts/reference (`dvc repro reference`). Every point is checked
    against the params schema before any model loads.
    """
    from aipc.pipeline import paths
    from aipc.validation.sweep import run_sweep

    rows = run_sweep(grid_path, obj.params_path, paths.source_dir(), paths.reference_dir(), out_dir,
                     only=list(only) or None, keep=keep)
    click.echo((out_dir / "sweep.md").read_text(encoding="utf-8"))
    click.echo(f"sweep: {len(rows)} points -> {out_dir}/sweep.csv, sweep.json, sweep.md, sweep.png")
