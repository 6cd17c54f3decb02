"""``aipc repro``: ``dvc repro`` with independent stages side by side when they fit in memory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

log = logging.getLogger("aipc.repro")


@click.command("repro")
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="At most this many stages at once (a second one only when the memory preflight's estimates "
              "of both fit in the memory available); 1 = one at a time, like `dvc repro`.")
@click.option("-f", "--force", is_flag=True, help="Run every planned stage even if unchanged (dvc repro --force).")
@click.option("--dry", is_flag=True, help="Print the plan (each stage with the stages it waits for) and stop.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write each stage's start, wall time and memory estimate to this JSON (also on failure).")
def command(targets: tuple[str, ...], jobs: int, force: bool, dry: bool, summary: Path | None) -> None:
    """Reproduce dvc.yaml's stages (or TARGETS and what they depend on) as `dvc repro` does, each by
    `dvc repro --single-item`, up to JOBS at a time. Run it in the workspace (the folder of dvc.yaml)."""
    from aipc.pipeline.fsutil import write_json
    from .repro import budget as repro_budget
    from .repro import plan, run
    from .repro import summary as summarize

    root = Path.cwd()
    steps = plan(root, targets)
    if dry:
        for step in steps:
            click.echo(f"{step.name}" + (f"  (after {', '.join(sorted(step.needs))})" if step.needs else ""))
        return
    budget, source = repro_budget()
    log.info("%d stages, up to %d at a time; memory for them side by side: %.1f GiB (%s, less the workers')",
             len(steps), jobs, budget / (1 << 30), source)
    width = max((len(s.name) for s in steps), default=0)
    t0 = time.perf_counter()
    try:
        run(root, steps, jobs, budget, ["--force"] if force else [],
            on_line=lambda step, line: click.echo(f"{step.name:<{width}} | {line}"))
    finally:
        if summary is not None:
            write_json(summary, summarize(steps, jobs, budget, time.perf_counter() - t0))
    log.info("all %d stages done in %.1f s", len(steps), time.perf_counter() - t0)
