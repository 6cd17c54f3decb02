"""``aipc generate`` and ``aipc chat``: try any bundle (or Hub repo id) the way its users will."""

from __future__ import annotations

import sys
from pathlib import Path

import click

_OPTIONS = [
    click.option("--device", default="CPU", show_default=True,
                 help="CPU, GPU, GPU.0, NPU, AUTO (OpenVINO); CPU, DML (ORT GenAI); NPU (NPU library)."),
    click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=1024, show_default=True),
    click.option("--temperature", type=click.FloatRange(0.0, 5.0), default=0.3, show_default=True,
                 help="0 = greedy."),
    click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True),
    click.option("--top-k", type=click.IntRange(0, None), default=0, show_default=True, help="0 = off."),
    click.option("--seed", type=int, default=None, help="Sampling seed, for reproducible output."),
    click.option("--system", default=None, help="A system message."),
    click.option("--performance-hint", type=click.Choice(["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]),
                 default=None, help="OpenVINO; default from params.yaml openvino.runtime."),
    click.option("--num-streams", type=click.IntRange(1, 64), default=None, help="OpenVINO."),
    click.option("--cache-dir", default=None, help="OpenVINO model cache dir (GPU / NPU; the CPU compiles without one)."),
]


def _options(f):
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def _setup(obj, target, o):
    from aipc.validation.chat import detect_backend, open_bundle, require_runtime, resolve
    from aipc.validation.runners.base import Sampling

    folder = resolve(target)
    backend = detect_backend(folder)
    require_runtime(backend)
    params = obj.params if Path(obj.params_path).is_file() else None
    runner = open_bundle(folder, o["device"], params, {"performance_hint": o["performance_hint"],
                                                         "num_streams": o["num_streams"], "cache_dir": o["cache_dir"]})
    sampling = Sampling(max_new_tokens=o["max_new_tokens"], temperature=o["temperature"], top_p=o["top_p"],
                        top_k=o["top_k"], seed=o["seed"])
    history = [{"role": "system", "content": o["system"]}] if o["system"] else []
    return runner, sampling, history, backend


def _turn(runner, sampling, history):
    from aipc.validation.chat import answer

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    gen, stats = answer(runner, history, sampling, write)
    sys.stdout.write("\n")
    for note in gen.notes:
        click.echo(f"[note] {note}", err=True)
    click.echo(f"[stats] first token {stats['first_token_s'] * 1000:.0f} ms, {stats['tokens_per_s']:.1f} tokens/s, "
               f"{stats['new_tokens']} tokens", err=True)
    return gen


@click.command("generate")
@click.argument("target")
@click.option("--prompt", required=True, help="The user message (the chat template is applied once).")
@_options
@click.pass_obj
def generate(obj, target: str, prompt: str, **o) -> None:
    """Answer one prompt with bundle TARGET (a folder or a Hub repo id), streaming tokens."""
    runner, sampling, history, _ = _setup(obj, target, o)
    with runner:
        history.append({"role": "user", "content": prompt})
        _turn(runner, sampling, history)


@click.command("chat")
@click.argument("target")
@_options
@click.pass_obj
def chat(obj, target: str, **o) -> None:
    """Interactive chat with bundle TARGET; `/exit` or end of input quits, `/reset` clears history."""
    from aipc.pipeline.errors import ContextTooLong

    runner, sampling, history, backend = _setup(obj, target, o)
    base = list(history)
    click.echo(f"[{backend}] chatting with {target} — /exit to quit, /reset to clear", err=True)
    with runner:
        while True:
            click.echo("> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/exit":
                break
            if line.strip() == "/reset":
                history = list(base)
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line.rstrip("\n")})
            try:
                gen = _turn(runner, sampling, history)
            except ContextTooLong as err:  # the chat goes on without that message
                history.pop()
                click.echo(f"[error] {err}\n  /reset starts a new chat", err=True)
                continue
            history.append({"role": "assistant", "content": gen.text})
