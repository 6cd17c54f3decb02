"""The ``aipc`` command. Errors from the library become one message and an exit code here, and only here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from aipc.pipeline import __version__
from aipc.pipeline.errors import PipelineError

log = logging.getLogger("aipc")


def _setup_logging(verbosity: int) -> None:
    level = logging.DEBUG if verbosity > 1 else logging.INFO if verbosity >= 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "nncf", "onnxruntime", "onnx_ir"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # DVC prints through the handlers it installs when imported; passed on to ours, each line came twice
    logging.getLogger("dvc").propagate = False
    # transformers 5 advises, in every process that reads a LongRoPE config as the Hub ships it (Phi-3-mini-128k,
    # Phi-3.5-mini, Phi-4-mini: original_max_position_embeddings without factor), to set factor instead: once
    # per stage, advice to the model's authors, nothing a user of the pipeline can act on (the config ships
    # unchanged)
    from aipc.pipeline.toolchain import drop_log_records

    drop_log_records("transformers.modeling_rope_utils",
                     "This model config has set a `rope_parameters['original_max_position_embeddings']` field")
    if not sys.stderr.isatty():  # per-tensor progress bars of the exporters flood logs and CI output
        os.environ.setdefault("TQDM_DISABLE", "1")


class AipcGroup(click.Group):
    """Runs a command; turns the project's errors into one message and exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            cost_out = ctx.params.get("cost_metrics")
            if cost_out is None:
                return super().invoke(ctx)
            from aipc.pipeline.cost import measure
            from aipc.pipeline.toolchain import check_toolchain

            check_toolchain()  # a DVC stage: never recorded as made by a toolchain other than the locked one
            with measure(Path(cost_out).stem, Path(cost_out)):
                return super().invoke(ctx)
        except PipelineError as err:
            click.echo(f"aipc: error: {err.message}", err=True)
            if err.fix:
                click.echo(f"aipc: fix: {err.fix}", err=True)
            if os.environ.get("AIPC_DEBUG"):
                raise
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("aipc: interrupted", err=True)
            ctx.exit(130)


class Ctx:
    def __init__(self, params_path: Path):
        self.params_path = params_path
        self._params = None

    @property
    def params(self):
        if self._params is None:
            from aipc.pipeline.config import load_params

            self._params = load_params(self.params_path)
        return self._params


@click.group(cls=AipcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aipc")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=Path("params.yaml"),
              show_default=True, help="The params file (schema: pipeline/config.py).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--cost-metrics", type=click.Path(path_type=Path), default=None,
              help="Write the command's wall time, CPU time and peak RSS (incl. children) to this JSON on success.")
@click.option("--skip-memory-check", is_flag=True,
              help="Run even when the RAM preflight predicts the stage won't fit (same as AIPC_SKIP_MEMORY_CHECK=1).")
@click.pass_context
def main(ctx: click.Context, params_path: Path, verbose: int, quiet: bool, cost_metrics: Path | None,
         skip_memory_check: bool) -> None:
    """Turn Phi-3 checkpoints into validated, publishable model bundles for Intel AI PCs."""
    _setup_logging(-1 if quiet else verbose)
    if skip_memory_check:
        os.environ["AIPC_SKIP_MEMORY_CHECK"] = "1"
    ctx.obj = Ctx(params_path)


def _register() -> None:
    from . import check, download, export, report, smoke, validate, workspace

    for mod in (check, download, export, report, smoke, workspace):
        main.add_command(mod.command)
    from . import bench, run

    main.add_command(bench.command)
    main.add_command(run.generate)
    main.add_command(run.chat)
    main.add_command(validate.reference)
    main.add_command(validate.calibration)
    main.add_command(validate.validate)
    from . import bundle, publish

    main.add_command(bundle.command)
    main.add_command(publish.command)
    main.add_command(publish.verify)
    from . import sweep

    main.add_command(sweep.sweep)
    # `aipc repro` (the parallel runner) belongs to the process machinery above: aipc.cli adds it


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
