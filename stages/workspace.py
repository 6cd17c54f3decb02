"""``aipc workspace init DIR``: a run folder for the real dvc.yaml on profile params."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("workspace")
def command() -> None:
    """Run workspaces (the offline demo and the end-to-end tests use them)."""


@command.command("init")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--profile", type=click.Path(path_type=Path), default=None,
              help="YAML merged over the release params.yaml, e.g. configs/embedded.yaml.")
def init(dest: Path, profile: Path | None) -> None:
    """Create DEST with params.yaml (+ PROFILE), dvc.yaml and code links; then `cd DEST && dvc repro`."""
    from aipc.pipeline import workspace

    workspace.create(dest, profile)
    click.echo(f"workspace: {dest} (run: cd {dest} && dvc repro)")


@command.command("commit")
@click.argument("dest", type=click.Path(path_type=Path, exists=True, file_okay=False), default=".")
@click.option("-m", "--message", default="dvc repro", show_default=True, help="The commit message.")
def commit(dest: Path, message: str) -> None:
    """Commit the workspace's params, dvc.lock and metrics (the baseline `dvc exp show`, `dvc params diff`
    and `dvc metrics diff` compare with); the same as `git add -A && git commit` where git knows who you are."""
    from aipc.pipeline import workspace

    rev = workspace.commit(dest, message)
    click.echo(f"committed {rev[:7]} in {dest}" if rev else f"nothing to commit in {dest}")
