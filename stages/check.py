"""``aipc check``: validate params.yaml (and the downloaded model against it, if present)."""

from __future__ import annotations

import click


@click.command("check")
@click.pass_obj
def command(obj) -> None:
    """Validate params.yaml against the schema (instant; loads no model)."""
    from pipeline import paths
    from pipeline.sources.checkpoint import read_model_config

    params = obj.params
    src = paths.source_dir()
    if (src / "config.json").is_file():
        params.check_model(read_model_config(src))
    click.echo(f"{obj.params_path}: OK ({params.model.source} model {params.model.name!r}, "
               f"OpenVINO variants: {', '.join(params.openvino.variants)})")
