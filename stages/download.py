"""``aipc download``: the source checkpoint into artifacts/source (DVC stage ``download``)."""

from __future__ import annotations

import click


@click.command("download")
@click.pass_obj
def command(obj) -> None:
    """Fetch the model named in params.yaml (Hub / local dir / embedded) into artifacts/source."""
    from aipc.pipeline import paths
    from aipc.pipeline.sources import materialize

    record = materialize(obj.params.model, paths.source_dir())
    click.echo(f"source: {paths.source_dir()} ({record['source']}, {len(record['files'])} files)")
