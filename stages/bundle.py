"""``aipc bundle BACKEND VARIANT``: the publishable bundle of one artifact (one DVC stage per artifact)."""

from __future__ import annotations

import click


@click.command("bundle")
@click.argument("backend", type=click.Choice(["openvino", "ortgenai", "npu"]))
@click.argument("variant")
@click.pass_obj
def command(obj, backend: str, variant: str) -> None:
    """artifacts/BACKEND/VARIANT + manifest.json + README.md + LICENSE -> artifacts/bundles/BACKEND-VARIANT."""
    from aipc.pipeline.fsutil import read_json
    from aipc.pipeline.package import build_bundle
    from aipc.pipeline.package.card import human

    out = build_bundle(obj.params, backend, variant)
    m = read_json(out / "manifest.json")
    verdicts = ", ".join(f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in sorted(m["validation"].items()))
    click.echo(f"bundle {backend}/{variant}: {out} ({len(m['files'])} files, "
               f"{human(sum(f['size'] for f in m['files'].values()))}; {verdicts or 'no validation recorded'}) "
               f"-> {m['repo_id']}")
