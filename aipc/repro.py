"""``aipc repro``: the stages of dvc.yaml, several at a time when the RAM preflight says they fit together.

``dvc repro`` runs one stage at a time, and most of our stages keep one core busy (CPU time ~ wall
time in ``metrics/cost/``). DVC itself supports several ``dvc repro`` processes in one workspace: the
repository lock is released while a stage's command runs (``dvc.stage.run``: ``unlocked_repo``), a
read/write lock on each stage's deps and outs keeps conflicting stages apart, and ``--wait-for-lock``
makes a process wait for the others' bookkeeping instead of failing. So this module:

* plans like ``dvc repro [targets]`` does (DVC's own stage graph and ``plan_repro``, frozen stages cut
  off from their dependencies as DVC does);
* starts ``dvc repro --single-item --wait-for-lock <stage>`` for a stage once every stage it depends on
  has finished, so each stage is still checked, run, hashed, cached and written to ``dvc.lock`` by DVC,
  exactly as in a sequential ``dvc repro`` (a stage with no changes is skipped by DVC as usual);
* runs up to ``jobs`` of them at once, and a second one only when the stages' memory estimates (the
  preflight of ``pipeline.preflight``, the one each stage checks itself before it loads a model) fit
  in the memory available when the run started, less what the toolchain workers hold. A stage whose
  peak is unknown (a command that is not ``aipc``'s) runs alone;
* shares one warm worker (``aipc.worker``) among all those processes (``AIPC_WORKER_OWNER``):
  the toolchain is imported once per run, as under one ``dvc repro``.

On a failure no new stage starts; the ones running finish (DVC records them) and the failed stages are
reported. Interrupting it (Ctrl-C or SIGTERM) sends SIGINT to every ``dvc repro`` it started and its
command (each runs in its own process group); a command that has not stopped after a minute is
terminated, then killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aipc.pipeline.errors import ConfigError, StagesFailed

log = logging.getLogger(__name__)

GIB = 1 << 30
OWNER_ENV = "AIPC_WORKER_OWNER"


@dataclass(eq=False)  # hashed by identity: a running step is a dict key
class Step:
    """One stage of the plan: its DVC address, the stages of the plan it waits for, and its command."""

    name: str
    needs: frozenset[str]
    cmd: str
    estimate_bytes: int | None = None
    start_s: float | None = None  # seconds after the run started
    wall_s: float | None = None
    returncode: int | None = None
    output: list[str] = field(default_factory=list)


def plan(root: Path, targets: Sequence[str] = ()) -> list[Step]:
    """The stages ``dvc repro [targets]`` would consider, in its order, each with the stages it waits for."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from aipc.pipeline.compat.dvc import repro_plan

    try:
        # DVC resolves targets (stage names, dvc.yaml) against the working directory, as `dvc repro` does
        with contextlib.chdir(root), Repo(str(root)) as repo:
            order, full = repro_plan(repo, list(targets) or ["dvc.yaml"])
            names = {s: s.addressing for s in order}
            steps = []
            for s in order:
                # DVC's graph points from a stage to the stages that produce its deps. The plan comes from
                # the active graph (a frozen stage's producers are not pulled in), but the waits come from
                # the whole graph: DVC locks a frozen stage's deps too, and a producer running beside it
                # would make it fail on that lock.
                needs = frozenset(names[d] for d in full.successors(s) if d in names)
                steps.append(Step(name=names[s], needs=needs, cmd=_cmd(s.cmd)))
            return steps
    except DvcException as err:
        what = ", ".join(targets) if targets else "dvc.yaml"
        raise ConfigError(f"{root}: cannot plan the stages of {what}: {err}",
                          fix="run it in the workspace (the folder of dvc.yaml) and name stages as `dvc repro` "
                          "does (e.g. export-openvino@int4)") from None


def _cmd(cmd) -> str:
    return " && ".join(cmd) if isinstance(cmd, list) else str(cmd or "")


def estimate(step: Step, root: Path) -> int | None:
    """The stage's peak memory as its own preflight estimates it, or None when it cannot be known here
    (not an ``aipc`` command, or its inputs say nothing yet): such a stage runs alone."""
    from aipc.pipeline import preflight

    try:
        argv = shlex.split(step.cmd)
    except ValueError:
        return None
    if not argv or Path(argv[0]).name != "aipc":
        return None
    from .worker import split_command

    try:
        rest, options = split_command(argv)
        return preflight.estimate_command(rest, root, root / Path(options.get("params_path") or "params.yaml"))
    except Exception as err:  # noqa: BLE001 - the stage reports its own errors when it runs
        log.debug("no memory estimate for %s: %s", step.name, err)
        return None


def fits(step: Step, running: Sequence[Step], budget: int) -> bool:
    """Whether ``step`` may start next to ``running`` within ``budget`` bytes (alone it always may: its own
    preflight decides)."""
    if not running:
        return True
    if step.estimate_bytes is None or any(r.estimate_bytes is None for r in running):
        return False
    return step.estimate_bytes + sum(r.estimate_bytes or 0 for r in running) <= budget


def next_steps(pending: Sequence[Step], running: Sequence[Step], done: set[str], jobs: int,
               budget: int) -> list[Step]:
    """The steps to start now, in plan order: those whose producers are done, while fewer than ``jobs`` run
    and each fits next to what runs (:func:`fits`)."""
    chosen: list[Step] = []
    for step in pending:
        if len(running) + len(chosen) >= jobs:
            break
        if step.needs <= done and fits(step, [*running, *chosen], budget):
            chosen.append(step)
    return chosen


def reserve_bytes() -> int:
    """Held outside the stages' estimates: the warm workers of the main and the NPU environment (each
    estimate counts the imports once more, so this is on top of a conservative sum)."""
    from aipc.pipeline.preflight import BASE_GIB

    return int(2 * BASE_GIB * GIB)


def budget() -> tuple[int, str]:
    """The memory the stages side by side may use: the preflight's budget (memory available, or
    ``AIPC_MEMORY_BUDGET_GIB``) less :func:`reserve_bytes`, and where the budget came from."""
    from aipc.pipeline.preflight import budget_bytes

    have, source = budget_bytes()
    left = have - reserve_bytes()
    if left <= 0:
        log.warning("%.1f GiB (%s) leaves nothing beside the workers' %.1f GiB: every stage runs alone",
                    have / GIB, source, reserve_bytes() / GIB)
    return max(left, 0), source


def run(root: Path, steps: list[Step], jobs: int, budget: int, dvc_args: Sequence[str] = (),
        on_line: Callable[[Step, str], None] | None = None, poll_s: float = 0.2) -> list[Step]:
    """Run ``steps`` (from :func:`plan`) with up to ``jobs`` ``dvc repro`` processes; return them with their
    exit codes and wall times. Raises :class:`StagesFailed` if any failed."""
    if jobs < 1:
        raise ConfigError(f"--jobs = {jobs}: must be at least 1", fix="use --jobs 1 (one stage at a time) or more")
    env = dict(os.environ)
    env[OWNER_ENV] = str(os.getpid())  # one warm worker for every dvc process of this run (aipc.worker)
    env.setdefault("PYTHONUNBUFFERED", "1")
    pending = list(steps)
    done: set[str] = set()
    failed: list[Step] = []
    estimated: set[str] = set()
    running: dict[Step, tuple[subprocess.Popen, threading.Thread]] = {}
    t0 = time.perf_counter()

    def start(step: Step) -> None:
        cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", *dvc_args, step.name]
        log.info("start %s (estimated peak %s; running: %s)", step.name,
                 "unknown" if step.estimate_bytes is None else f"{step.estimate_bytes / GIB:.1f} GiB",
                 ", ".join(r.name for r in running) or "nothing else")
        # its own process group: an interrupt reaches the stage's command through stop(), also when only
        # this process was signalled (DVC ignores SIGINT while a command runs; the command does not)
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                process_group=0)
        step.start_s = round(time.perf_counter() - t0, 2)
        pump = threading.Thread(target=_pump, args=(proc, step, on_line), daemon=True)
        pump.start()
        running[step] = (proc, pump)

    previous = _interrupt_on_signals()  # before the first Popen: the stages inherit SIGINT at its default
    try:
        while pending or running:
            for step, (proc, pump) in list(running.items()):
                if proc.poll() is None:
                    continue
                pump.join()
                step.returncode = proc.returncode
                step.wall_s = round(time.perf_counter() - t0 - (step.start_s or 0.0), 2)
                del running[step]
                if proc.returncode == 0:
                    done.add(step.name)
                    log.info("done %s in %.1f s", step.name, step.wall_s)
                else:
                    failed.append(step)
                    log.error("%s failed (dvc repro exit %d)", step.name, proc.returncode)
            if not failed:
                for step in pending:
                    if step.needs <= done and step.name not in estimated:  # its inputs exist now
                        step.estimate_bytes = estimate(step, root)
                        estimated.add(step.name)
                for step in next_steps(pending, list(running), done, jobs, budget):
                    pending.remove(step)
                    start(step)
            elif not running:
                break
            time.sleep(poll_s)
    except BaseException:  # Ctrl-C, SIGINT/SIGTERM (see _interrupt_on_signals) or an error here
        stop([proc for proc, _ in running.values()])
        raise
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(sig, handler)
    if failed:
        skipped = [p.name for p in pending]
        raise StagesFailed(
            f"stage{'s' if len(failed) > 1 else ''} failed: {', '.join(s.name for s in failed)}"
            + (f" ({len(skipped)} not started)" if skipped else ""),
            fix="read the stage's output above (its lines start with its name), fix the cause and run "
            "`aipc repro` again: the stages that finished are not run again")
    return steps


def summary(steps: Sequence[Step], jobs: int, budget: int, wall_s: float) -> dict:
    """What a run did, as JSON: each stage's start, wall time (DVC's bookkeeping included) and estimate."""
    return {"jobs": jobs, "budget_bytes": budget, "wall_s": round(wall_s, 2), "stages": [
        {"name": s.name, "needs": sorted(s.needs), "estimate_bytes": s.estimate_bytes, "start_s": s.start_s,
         "wall_s": s.wall_s, "returncode": s.returncode} for s in steps]}


def stop(procs: Sequence[subprocess.Popen], grace_s: float = 60.0) -> None:
    """Interrupt each ``dvc repro`` process group (the stage's command stops and removes its partial output,
    DVC records nothing), wait up to ``grace_s``, then terminate and at last kill what is left."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait_s
        for proc in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _interrupt_on_signals() -> dict[int, Any]:
    """SIGINT and SIGTERM stop a run as Ctrl-C does, whatever this process inherited; returns the handlers to
    restore (none outside the main thread, where Python cannot set handlers).

    A job started detached from a non-interactive shell (``(aipc repro &)``, ``nohup aipc repro &`` in a
    script, many CI runners) begins with SIGINT *ignored*, and Python then installs no handler of its own:
    SIGINT did nothing, and the ``dvc repro`` processes started here inherited the ignored SIGINT, so the
    SIGINT :func:`stop` sends them was lost too and only the SIGTERM a minute later stopped them. A handler
    set here is reset to the default in every process started after it (exec keeps an ignored signal, not a
    handled one), so each ``dvc repro`` and its stage's command can be interrupted again.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _pump(proc: subprocess.Popen, step: Step, on_line: Callable[[Step, str], None] | None) -> None:
    """Read the stage's output to its end (a child whose pipe fills up would block forever)."""
    assert proc.stdout is not None  # started with stdout=PIPE
    for line in proc.stdout:
        line = line.rstrip("\n")
        step.output.append(line)
        if on_line is not None:
            try:
                on_line(step, line)
            except Exception as err:  # noqa: BLE001 - e.g. `aipc repro | head` closed our stdout
                log.warning("cannot show %s's output any more (%s); it is still read", step.name, err)
                on_line = None
    proc.stdout.close()
