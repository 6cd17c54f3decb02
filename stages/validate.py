"""``aipc reference`` and ``aipc validate BACKEND VARIANT``: the accuracy harness stages."""

from __future__ import annotations

import click


@click.command("reference")
@click.pass_obj
def reference(obj) -> None:
    """Run the source model (transformers, CPU) over the evaluation texts into artifacts/reference."""
    from aipc.pipeline import paths
    from aipc.validation.reference import build_reference

    meta = build_reference(obj.params, paths.source_dir(), paths.reference_dir())
    click.echo("reference: " + ", ".join(f"{k} ppl {v['perplexity']:.3f}" for k, v in meta["texts"].items()))


@click.command("calibration")
@click.pass_obj
def calibration(obj) -> None:
    """Tokenize the calibration texts (validation/data/calibration) into artifacts/calibration."""
    from aipc.pipeline import paths
    from aipc.pipeline.calibration import build_calibration

    meta = build_calibration(obj.params, paths.source_dir(), paths.calibration_dir())
    click.echo(f"calibration: {meta['shape'][0]} windows x {meta['shape'][1]} tokens from {', '.join(meta['texts'])}")


@click.command("validate")
@click.argument("backend")
@click.argument("variant")
@click.pass_obj
def validate(obj, backend: str, variant: str) -> None:
    """Accuracy, tokenizer parity and gates for artifacts/BACKEND/VARIANT -> metrics/validate/."""
    from aipc.pipeline import paths
    from aipc.validation.validate import validate_artifact

    folder = paths.existing_artifact(backend, variant)
    rec = validate_artifact(obj.params, backend, variant, folder, paths.source_dir(), paths.reference_dir(),
                            paths.smoke_metrics(backend, variant), paths.validate_metrics(backend, variant))
    acc = rec["accuracy"]
    click.echo(f"validate {backend}/{variant}: PASSED (worst ppl ratio {acc['worst_ppl_ratio']:.4f}, "
               f"top-1 {acc['top1_agreement']:.3f}, KL {acc['kl_mean']:.4f})")
