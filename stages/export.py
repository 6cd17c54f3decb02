"""``aipc export BACKEND VARIANT``: one artifact per DVC stage."""

from __future__ import annotations

import click


@click.group("export")
def command() -> None:
    """Export the downloaded model with one backend."""


def _variant(params, section: str, key: str):
    from pipeline.errors import ConfigError

    variants = getattr(params, section).variants
    if key not in variants:
        raise ConfigError(f"params.yaml: {section}.variants has no {key!r}",
                          fix=f"use one of: {', '.join(variants)}")
    return key


@command.command("openvino")
@click.argument("variant")
@click.pass_obj
def openvino(obj, variant: str) -> None:
    """OpenVINO IR (model + tokenizer/detokenizer IR) for VARIANT of openvino.variants."""
    from pipeline import paths
    from pipeline.export import openvino as ov

    key = _variant(obj.params, "openvino", variant)
    out = paths.artifact_dir("openvino", key)
    record = ov.export(obj.params, key, paths.source_dir(), out)
    click.echo(f"openvino/{key}: {out} {record['effective']['weight_share_by_type']}")


@command.command("ortgenai")
@click.argument("variant")
@click.pass_obj
def ortgenai(obj, variant: str) -> None:
    """ONNX Runtime GenAI model (onnxruntime_genai.models.builder) for VARIANT of ortgenai.variants."""
    from pipeline import paths
    from pipeline.export import ortgenai as og

    key = _variant(obj.params, "ortgenai", variant)
    out = paths.artifact_dir("ortgenai", key)
    record = og.export(obj.params, key, paths.source_dir(), out)
    click.echo(f"ortgenai/{key}: {out} {record['effective']['matmulnbits'] or record['effective']['logits_dtype']}")


@command.command("npu")
@click.argument("variant")
@click.pass_obj
def npu(obj, variant: str) -> None:
    """intel-npu-acceleration-library 1.4.0 model (sha256-recorded torch pickle, run in the NPU env) for VARIANT of npu.variants."""
    from pipeline import paths
    from pipeline.export import npu as npu_export

    key = _variant(obj.params, "npu", variant)
    out = paths.artifact_dir("npu", key)
    record = npu_export.export(obj.params, key, paths.source_dir(), out)
    fallback = f" (no NPU: {record['device_fallback']} fallback)" if record.get("device_fallback") else ""
    click.echo(f"npu/{key}: {out} {record['params']['dtype']} on {record['device']}{fallback}")
