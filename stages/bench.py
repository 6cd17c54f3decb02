"""``aipc bench``: latency, decode speed and peak RSS of every built artifact vs transformers fp32."""

from __future__ import annotations

import click


@click.command("bench")
@click.option("--artifact", "only", multiple=True, metavar="BACKEND-VARIANT",
              help="Bench only these artifacts (repeatable), e.g. openvino-int4; default: every built one.")
@click.option("--prompt-lengths", default="32,256,1024", show_default=True, help="Prompt lengths in tokens.")
@click.option("--new-tokens", default=32, show_default=True, help="Greedy tokens generated per run.")
@click.option("--repeats", default=2, show_default=True, help="Runs per prompt length (median kept).")
@click.pass_obj
def command(obj, only: tuple[str, ...], prompt_lengths: str, new_tokens: int, repeats: int) -> None:
    """Write metrics/bench.json (a DVC metric) and metrics/plots/bench.png; prints ratios to the baseline."""
    from pydantic import ValidationError

    from aipc.pipeline import paths
    from aipc.pipeline.config import BenchOptions, format_validation_error
    from aipc.pipeline.errors import ConfigError, SourceError
    from aipc.validation.bench import run_bench

    try:
        lengths = [int(x) for x in prompt_lengths.split(",") if x.strip()]
        opts = BenchOptions(prompt_lengths=lengths, new_tokens=new_tokens, repeats=repeats)
    except ValueError as err:
        detail = format_validation_error(err, {}, "aipc bench") if isinstance(err, ValidationError) else str(err)
        raise ConfigError(f"aipc bench options: {detail}",
                          fix="e.g. --prompt-lengths 32,256 --new-tokens 32 --repeats 2") from None
    params = obj.params
    built = [(b, v, paths.artifact_dir(b, v)) for b, v in params.artifact_ids()
             if paths.artifact_dir(b, v).is_dir() and (not only or f"{b}-{v}" in only)]
    unknown = set(only) - {f"{b}-{v}" for b, v in params.artifact_ids()}
    if unknown:
        raise ConfigError(f"--artifact {', '.join(sorted(unknown))}: no such artifact in params.yaml",
                          fix="use BACKEND-VARIANT names, e.g. " + ", ".join(f"{b}-{v}" for b, v in params.artifact_ids()[:3]))
    if not built:
        raise SourceError("no built artifact to bench", fix="run `dvc repro` first")
    rec = run_bench(params, opts, built, paths.source_dir(), paths.METRICS / "bench.json",
                    paths.METRICS / "plots" / "bench.png")
    n = opts.prompt_lengths[-1]
    click.echo(f"{'artifact':24} {'first token s':>14} {'decode tok/s':>13} {'peak RSS MiB':>13}   ratios to transformers fp32 "
               f"(first token @{n}, decode @{n}, RSS)")
    for name, r in rec["artifacts"].items():
        row = r["results"][-1]
        ratios = r["ratios"] or {}
        click.echo(f"{name:24} {row['first_token_s']:>14.3f} {row['decode_tokens_per_s'] or 0:>13.1f} "
                   f"{r['peak_rss_mib']:>13.0f}   "
                   + ("baseline" if not ratios else
                      f"x{ratios.get(f'first_token@{n}', 0):.2f}  x{ratios.get(f'decode_speed@{n}', 0):.2f}  "
                      f"x{ratios['peak_rss']:.2f}"))
    click.echo(f"metrics: {paths.METRICS / 'bench.json'}  chart: {paths.METRICS / 'plots' / 'bench.png'}")
