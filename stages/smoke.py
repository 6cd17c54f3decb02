"""``aipc smoke BACKEND VARIANT``: greedy chat generations through the backend's own runtime."""

from __future__ import annotations

import click


@click.command("smoke")
@click.argument("backend")
@click.argument("variant")
@click.pass_obj
def command(obj, backend: str, variant: str) -> None:
    """Smoke-generate with artifacts/BACKEND/VARIANT; writes metrics/smoke/BACKEND-VARIANT.json."""
    from pipeline import paths
    from pipeline.errors import SourceError
    from validation.smoke import run_smoke

    folder = paths.artifact_dir(backend, variant)
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such artifact", fix=f"run `dvc repro` (or `aipc export {backend} {variant}`) first")
    record = run_smoke(obj.params, backend, folder, paths.smoke_metrics(backend, variant))
    click.echo(f"smoke {backend}/{variant}: {record['prompts_passed']}/{record['prompts_total']} passed")
