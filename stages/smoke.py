"""``aipc smoke BACKEND VARIANT``: greedy chat generations through the backend's own runtime."""

from __future__ import annotations

import click


@click.command("smoke")
@click.argument("backend")
@click.argument("variant")
@click.pass_obj
def command(obj, backend: str, variant: str) -> None:
    """Smoke-generate with artifacts/BACKEND/VARIANT; writes metrics/smoke/BACKEND-VARIANT.json."""
    from aipc.pipeline import paths
    from aipc.validation.smoke import run_smoke

    folder = paths.existing_artifact(backend, variant)
    record = run_smoke(obj.params, backend, folder, paths.smoke_metrics(backend, variant))
    click.echo(f"smoke {backend}/{variant}: {record['prompts_passed']}/{record['prompts_total']} passed")
