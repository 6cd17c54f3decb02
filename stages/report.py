"""``aipc report``: the validation summary across artifacts (table, DVC plot data, PNG)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--plots/--no-plots", default=True, help="Also draw metrics/plots/accuracy.png.")
@click.option("--dvc", "dvc_stage", is_flag=True,
              help="Write only what the `report` stage of dvc.yaml outputs: metrics/accuracy/ (what `dvc metrics "
                   "show` prints) and metrics/plots/{accuracy,gates,cost}.json (what `dvc plots show` renders).")
def command(plots: bool, dvc_stage: bool) -> None:
    """Print the accuracy table of every validated artifact."""
    from aipc.pipeline import paths
    from aipc.pipeline.errors import SourceError
    from aipc.validation.report import collect, table, write_dvc_outputs, write_plots

    rows = collect(paths.METRICS)
    if not rows:
        raise SourceError(f"{paths.METRICS / 'validate'}: no validation metrics", fix="run `dvc repro` first")
    if dvc_stage:
        for out in write_dvc_outputs(Path(paths.METRICS)):
            click.echo(f"wrote {out}")
        return
    click.echo(table(rows))
    from aipc.pipeline.cost import collect as collect_costs
    from aipc.validation.report import cost_table

    costs = collect_costs(paths.METRICS)
    if costs:
        click.echo("\nper-stage cost (metrics/cost/)\n" + cost_table(costs))
    if plots:
        png = write_plots(rows, Path(paths.METRICS) / "plots")
        click.echo(f"plots: {png}")
