"""``aipc check``: validate params.yaml, and the model's config against it as far as it is on disk."""

from __future__ import annotations

import click


@click.command("check")
@click.pass_obj
def command(obj) -> None:
    """Validate params.yaml against the schema, the model's config.json (Phi-3, widths against the
    group and block sizes) where it can be read without loading weights or the network, and that every
    evaluation and calibration text named exists."""
    from aipc.pipeline import paths
    from aipc.pipeline.sources import source_config

    params = obj.params
    config, origin = source_config(params.model, paths.source_dir())
    if config is not None:
        params.check_model(config)
    from aipc.pipeline.texts import text_path

    for section in ("validation", "calibration"):  # every text named exists (user texts: under texts/)
        for entry in getattr(getattr(params, section, None), "texts", None) or []:
            text_path(section, entry)
    click.echo(f"{obj.params_path}: OK ({params.model.source} model {params.model.name!r}, "
               f"OpenVINO variants: {', '.join(params.openvino.variants)}; model config: "
               f"{'checked, ' + origin if config is not None else 'not checked: ' + origin})")
