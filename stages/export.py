"""``aipc export BACKEND VARIANT``: one artifact per DVC stage."""

from __future__ import annotations

import click


@click.group("export")
def command() -> None:
    """Export the downloaded model with one backend."""


def _export(params, backend: str, key: str):
    from aipc.pipeline import paths
    from aipc.pipeline.export import run

    out = paths.artifact_dir(backend, key)
    return out, run(params, backend, key, paths.source_dir(), out)


@command.command("openvino")
@click.argument("variant")
@click.pass_obj
def openvino(obj, variant: str) -> None:
    """OpenVINO IR (model + tokenizer/detokenizer IR) for VARIANT of openvino.variants, compressed from
    artifacts/openvino-base."""
    out, record = _export(obj.params, "openvino", variant)
    click.echo(f"openvino/{variant}: {out} {record['effective']['weight_share_by_type']}")


@command.command("openvino-base")
@click.pass_obj
def openvino_base(obj) -> None:
    """The uncompressed OpenVINO IR (one PyTorch load + trace) every OpenVINO variant but fp32 is compressed from."""
    from aipc.pipeline import paths
    from aipc.pipeline.export import run_base

    out = paths.openvino_base_dir()
    record = run_base(obj.params, paths.source_dir(), out)
    click.echo(f"openvino-base: {out} {record['effective']['weight_share_by_type']}")


@command.command("ortgenai")
@click.argument("variant")
@click.pass_obj
def ortgenai(obj, variant: str) -> None:
    """ONNX Runtime GenAI model (onnxruntime_genai.models.builder) for VARIANT of ortgenai.variants."""
    out, record = _export(obj.params, "ortgenai", variant)
    click.echo(f"ortgenai/{variant}: {out} {record['effective']['matmulnbits'] or record['effective']['logits_dtype']}")


@command.command("npu")
@click.argument("variant")
@click.pass_obj
def npu(obj, variant: str) -> None:
    """intel-npu-acceleration-library 1.4.0 model (sha256-recorded torch pickle, run in the NPU env) for VARIANT
    of npu.variants."""
    out, record = _export(obj.params, "npu", variant)
    fallback = f" (no NPU: {record['device_fallback']} fallback)" if record.get("device_fallback") else ""
    click.echo(f"npu/{variant}: {out} {record['params']['dtype']} on {record['device']}{fallback}")
