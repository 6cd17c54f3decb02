"""``aipc repro``: dvc.yaml's stages side by side when they fit (aipc.repro), run by real ``dvc repro``
processes in real DVC workspaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from aipc import repro
from aipc.repro import StagesFailed, Step

try:
    from .conftest import ROOT, detached, e2e_profile, sig_ignored, venv_env, wait_for
    from .faults import assert_refused
except ImportError:
    from conftest import ROOT, detached, e2e_profile, sig_ignored, venv_env, wait_for
    from faults import assert_refused

BIN = Path(sys.executable).parent
GIB = 1 << 30

# Each stage records when its command started and ended (its output), sleeping in between.
STAGE = "{py} -c \"import json,sys,time; t=time.time(); time.sleep({sleep}); " \
        "json.dump([t, time.time()], open('{out}', 'w')); sys.exit({code})\""


def _workspace(tmp_path: Path, stages: dict[str, dict]) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=ws, check=True, env=venv_env())
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return ws


def _stage(name: str, deps: list[str] = (), sleep: float = 1.5, code: int = 0) -> dict:
    return {"cmd": STAGE.format(py=sys.executable, sleep=sleep, out=f"{name}.json", code=code),
            "deps": list(deps), "outs": [f"{name}.json"]}


def _diamond(tmp_path: Path, fail: str | None = None) -> Path:
    """a -> (b, c) -> d, and e on its own."""
    return _workspace(tmp_path, {
        "a": _stage("a", sleep=0.2),
        "b": _stage("b", ["a.json"], sleep=3.0, code=1 if fail == "b" else 0),
        "c": _stage("c", ["a.json"], sleep=3.0),
        "d": _stage("d", ["b.json", "c.json"], sleep=0.2),
        "e": _stage("e", sleep=0.2),
    })


def _span(ws: Path, name: str) -> tuple[float, float]:
    return tuple(json.loads((ws / f"{name}.json").read_text()))


def _overlap(x: tuple[float, float], y: tuple[float, float]) -> float:
    return min(x[1], y[1]) - max(x[0], y[0])


def _status(ws: Path) -> str:
    r = subprocess.run([str(BIN / "dvc"), "status"], cwd=ws, env=venv_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def estimate_1gib(monkeypatch):
    """These stages are not aipc commands (their peak is unknown, so each would run alone): give them one."""
    monkeypatch.setattr(repro, "estimate", lambda step, root: GIB)


def test_the_plan_is_dvcs_order_with_each_stages_producers(tmp_path):
    ws = _diamond(tmp_path)
    steps = repro.plan(ws)
    names = [s.name for s in steps]
    assert sorted(names) == ["a", "b", "c", "d", "e"]
    needs = {s.name: s.needs for s in steps}
    assert needs == {"a": frozenset(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": frozenset()}
    assert names.index("d") > max(names.index("b"), names.index("c")) > names.index("a")
    # a target brings what it depends on, as `dvc repro d` does, and nothing else
    assert sorted(s.name for s in repro.plan(ws, ["d"])) == ["a", "b", "c", "d"]
    assert [s.name for s in repro.plan(ws, ["e"])] == ["e"]


def test_a_target_dvc_does_not_know_is_a_config_error(tmp_path):
    ws = _diamond(tmp_path)
    with pytest.raises(repro.ConfigError, match="nope"):
        repro.plan(ws, ["nope"])
    r = subprocess.run([str(BIN / "aipc"), "repro", "nope"], cwd=ws, env=venv_env(), capture_output=True, text=True)
    assert_refused(r, "proc-repro-unknown-target")
    assert not (ws / "a.json").exists()  # nothing ran


def test_independent_stages_run_side_by_side_and_dependents_wait(tmp_path, estimate_1gib):
    ws = _diamond(tmp_path)
    lines: list[tuple[str, str]] = []
    steps = repro.run(ws, repro.plan(ws), jobs=2, budget=4 * GIB, on_line=lambda s, line: lines.append((s.name, line)))
    assert all(s.returncode == 0 for s in steps)
    a, b, c, d = (_span(ws, n) for n in "abcd")
    assert _overlap(b, c) > 1.0, (b, c)  # side by side, not one after the other
    assert b[0] >= a[1] and c[0] >= a[1]  # after their producer
    assert d[0] >= max(b[1], c[1])
    # DVC ran, hashed and recorded every stage as a sequential repro would
    assert "Data and pipelines are up to date" in _status(ws)
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == ["a", "b", "c", "d", "e"]
    assert ("b", "Running stage 'b':") in lines
    # and a second run changes nothing
    before = {n: _span(ws, n) for n in "abcde"}
    repro.run(ws, repro.plan(ws), jobs=2, budget=4 * GIB)
    assert {n: _span(ws, n) for n in "abcde"} == before


def test_stages_that_do_not_fit_together_run_one_at_a_time(tmp_path, estimate_1gib):
    ws = _diamond(tmp_path)
    repro.run(ws, repro.plan(ws), jobs=2, budget=int(1.5 * GIB))
    assert _overlap(_span(ws, "b"), _span(ws, "c")) < 0
    assert "Data and pipelines are up to date" in _status(ws)


def test_a_stage_whose_peak_is_unknown_runs_alone(tmp_path):
    ws = _diamond(tmp_path)
    steps = repro.plan(ws)
    assert all(repro.estimate(s, ws) is None for s in steps)  # not aipc commands
    repro.run(ws, steps, jobs=2, budget=100 * GIB)
    assert _overlap(_span(ws, "b"), _span(ws, "c")) < 0


def test_a_failure_starts_nothing_new_lets_the_running_finish_and_names_the_stage(tmp_path, estimate_1gib):
    ws = _diamond(tmp_path, fail="b")
    steps = repro.plan(ws)
    with pytest.raises(StagesFailed, match=r"failed: b\b") as err:
        repro.run(ws, steps, jobs=2, budget=4 * GIB)
    assert "aipc repro" in err.value.fix
    by = {s.name: s for s in steps}
    assert by["b"].returncode != 0
    assert by["c"].returncode == 0 and (ws / "c.json").exists()  # ran beside b: finished and recorded
    assert by["d"].returncode is None and not (ws / "d.json").exists()
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert "c" in lock["stages"] and "b" not in lock["stages"] and "d" not in lock["stages"]
    # through the CLI: the project's message and exit code, no traceback
    r = subprocess.run([str(BIN / "aipc"), "repro"], cwd=ws, env=venv_env(), capture_output=True, text=True)
    assert_refused(r, "proc-repro-stage-fails")
    assert "b | Running stage 'b':" in r.stdout  # the stage's own output, named
    # after the fix, the same command finishes the rest and runs only what had not run
    spec = yaml.safe_load((ws / "dvc.yaml").read_text())
    spec["stages"]["b"]["cmd"] = spec["stages"]["b"]["cmd"].replace("sys.exit(1)", "sys.exit(0)")
    (ws / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    c_before = _span(ws, "c")
    r = subprocess.run([str(BIN / "aipc"), "repro"], cwd=ws, env=venv_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _span(ws, "c") == c_before and (ws / "d.json").exists()
    assert "Data and pipelines are up to date" in _status(ws)


def test_a_frozen_stage_waits_for_its_producer_as_dvc_locks_its_deps(tmp_path, estimate_1gib):
    """DVC's active graph cuts a frozen stage off from its producers, but DVC still locks the frozen stage's
    deps: started beside its producer it would fail on that lock, so it waits for it."""
    ws = _workspace(tmp_path, {"a": _stage("a", sleep=3.0), "c": _stage("c", ["a.json"], sleep=0.2)})
    repro.run(ws, repro.plan(ws), jobs=2, budget=4 * GIB)
    spec = yaml.safe_load((ws / "dvc.yaml").read_text())
    spec["stages"]["c"]["frozen"] = True
    spec["stages"]["a"]["cmd"] = spec["stages"]["a"]["cmd"].replace("time.sleep(3.0)", "time.sleep(3.01)")
    (ws / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    c_before = _span(ws, "c")
    steps = repro.plan(ws)
    assert {s.name: s.needs for s in steps} == {"a": frozenset(), "c": {"a"}}
    by = {s.name: s for s in repro.run(ws, steps, jobs=2, budget=4 * GIB)}
    assert by["c"].returncode == 0 and by["c"].start_s >= by["a"].start_s + by["a"].wall_s
    assert _span(ws, "c") == c_before  # frozen: checked, not run


def test_a_failing_output_callback_does_not_stall_the_stage(tmp_path, estimate_1gib):
    """`aipc repro | head`: once the terminal side is gone the output is still read, so a stage that writes
    more than a pipe holds still finishes."""
    cmd = (f"{sys.executable} -c \"import sys; [print('x' * 200) for _ in range(2000)]; "
           "open('big.out', 'w').write('ok')\"")
    ws = _workspace(tmp_path, {"big": {"cmd": cmd, "outs": ["big.out"]}})
    shown: list[str] = []

    def on_line(step, line):
        shown.append(line)
        raise BrokenPipeError(32, "Broken pipe")

    result: list = []
    worker = threading.Thread(target=lambda: result.append(repro.run(ws, repro.plan(ws), 1, GIB, on_line=on_line)),
                              daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the run stalled on a full pipe"
    assert result and result[0][0].returncode == 0
    assert len(shown) == 1 and (ws / "big.out").read_text() == "ok"
    assert sum(line == "x" * 200 for line in result[0][0].output) == 2000


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_aipc_repro_alone_stops_the_stages_it_started(tmp_path, sig):
    """Only the `aipc repro` process is signalled (a CI timeout, `kill`): the stage's command is stopped too
    (DVC itself ignores SIGINT while a command runs), nothing is left running or recorded."""
    cmd = (f"{sys.executable} -c \"import os,time; open('pid', 'w').write(str(os.getpid())); time.sleep(120); "
           "open('slow.out', 'w').write('ok')\"")
    ws = _workspace(tmp_path, {"slow": {"cmd": cmd, "outs": ["slow.out"]}})
    proc = subprocess.Popen([str(BIN / "aipc"), "repro"], cwd=ws, env=venv_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (ws / "pid").exists() or not (ws / "pid").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    stage_pid = int((ws / "pid").read_text())
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30, "the stage was not stopped: aipc repro waited for it"
    assert proc.returncode == 130, err
    assert "aipc: interrupted" in err and "Traceback" not in err
    assert not _running(stage_pid)
    assert not (ws / "slow.out").exists() and not (ws / "dvc.lock").exists()


def test_a_detached_job_starts_with_sigint_ignored_and_no_parent_waiting(tmp_path):
    """The premise of the detached tests below: such a job inherits SIGINT ignored and is not our child."""
    pid = detached("sleep 30", tmp_path, venv_env())
    try:
        wait_for(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "sleep", 10, "sleep to start")
        assert sig_ignored(pid, signal.SIGINT) and not sig_ignored(pid, signal.SIGTERM)
        assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid()
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_detached_aipc_repro_stops_its_stages_within_seconds(tmp_path, sig):
    """Issue: started as `(aipc repro &)` (SIGINT inherited ignored, reparented), SIGINT did nothing and SIGTERM
    took a minute, since the `dvc repro` it started and the stage's command ignored the SIGINT it sent them."""
    cmd = (f"{sys.executable} -c \"import os,time; open('pid', 'w').write(str(os.getpid())); time.sleep(120); "
           "open('slow.out', 'w').write('ok')\"")
    ws = _workspace(tmp_path, {"slow": {"cmd": cmd, "outs": ["slow.out"]}})
    pid = detached(f"{BIN / 'aipc'} repro", ws, venv_env())
    try:
        wait_for(lambda: (ws / "pid").exists() and (ws / "pid").read_text(), 60, "the stage to start")
        stage_pid = int((ws / "pid").read_text())
        assert sig_ignored(stage_pid, signal.SIGINT) is False  # the stage can be interrupted again
        t0 = time.monotonic()
        os.kill(pid, sig)
        wait_for(lambda: not _running(pid), 30, "aipc repro to exit")
        assert time.monotonic() - t0 < 15, "the stage was not stopped at once"
        assert not _running(stage_pid)
        err = (ws / "err.log").read_text()
        assert "aipc: interrupted" in err and "Traceback" not in err, err
        assert not (ws / "slow.out").exists() and not (ws / "dvc.lock").exists()
    finally:
        for p in [pid, *([int((ws / "pid").read_text())] if (ws / "pid").exists() else [])]:
            if _running(p):
                os.kill(p, signal.SIGKILL)


def test_fits_needs_every_estimate_and_the_sum_within_the_budget():
    def step(n, est):
        return Step(name=n, needs=frozenset(), cmd="", estimate_bytes=est)

    assert repro.fits(step("x", None), [], 0)  # alone, its own preflight decides
    assert repro.fits(step("x", 2), [step("y", 3)], 5)
    assert not repro.fits(step("x", 3), [step("y", 3)], 5)
    assert not repro.fits(step("x", None), [step("y", 1)], 100)
    assert not repro.fits(step("x", 1), [step("y", None)], 100)


@pytest.mark.slow  # reads the end-to-end workspace (a full repro of the embedded model)
def test_memory_estimates_are_the_stages_own_preflight(repro_workspace):
    """Each aipc stage of the real dvc.yaml is estimated as its command's preflight estimates it."""
    from aipc.pipeline import paths, preflight
    from aipc.pipeline.config import load_params

    ws, r, _ = repro_workspace
    assert r.returncode == 0, r.stderr[-3000:]
    params = load_params(ws / "params.yaml")
    by = {s.name: s for s in repro.plan(ws)}
    src = ws / paths.source_dir()
    est = {n: repro.estimate(s, ws) for n, s in by.items()}
    assert est["export-openvino-base"] == preflight.estimate_export("openvino", "base", src)["estimate_bytes"]
    kind = params.openvino.variants["int4"].memory_kind
    assert est["export-openvino@int4"] == preflight.estimate_export("openvino", kind, src)["estimate_bytes"]
    kind = params.ortgenai.variants["dml-fp16"].memory_kind
    assert est["export-ortgenai@dml-fp16"] == preflight.estimate_export("ortgenai", kind, src)["estimate_bytes"]
    assert est["reference"] == preflight.estimate_export("reference", params.validation.reference_dtype,
                                                         src)["estimate_bytes"]
    folder = ws / paths.artifact_dir("ortgenai", "dml-fp16")
    assert est["validate-ortgenai@dml-fp16"] == preflight.estimate_artifact("ortgenai", folder)["estimate_bytes"]
    assert est["download"] == est["bundle-openvino@int4"] == int(preflight.BASE_GIB * GIB)
    assert all(v is not None for v in est.values()), est


def test_a_stage_whose_inputs_are_not_on_disk_yet_has_no_estimate(tmp_path):
    """With no checkpoint or artifact yet (its producer frozen or not planned) the estimate would be the
    imports alone: it is unknown instead, so the stage runs alone."""
    from aipc.pipeline import preflight

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = tmp_path / "params.yaml"
    for argv in (["export", "openvino-base"], ["export", "openvino", "int4"], ["reference"],
                 ["validate", "openvino", "int4"], ["smoke", "ortgenai", "dml-int4"]):
        assert preflight.estimate_command(argv, tmp_path, params) is None, argv
    assert preflight.estimate_command(["download"], tmp_path, params) == int(preflight.BASE_GIB * GIB)


@pytest.mark.slow
@pytest.mark.converts
def test_aipc_repro_gives_the_artifacts_a_sequential_dvc_repro_gives(tmp_path, repro_workspace, embedded_dir):
    """The same stages of the real dvc.yaml on the embedded model, two at a time through the CLI, in a
    fresh workspace: every output DVC records is the one the sequential `dvc repro` recorded, one worker
    served every stage, and the workspace is up to date for DVC afterwards."""
    seq_ws, r, _ = repro_workspace
    assert r.returncode == 0, r.stderr[-3000:]
    env = venv_env(HF_HOME=str(tmp_path / "hf"), AIPC_CACHE_DIR=str(embedded_dir.parent.parent))
    ws = tmp_path / "ws"
    profile = e2e_profile(tmp_path / "e2e.yaml")  # the params of repro_workspace
    subprocess.run([str(BIN / "aipc"), "workspace", "init", str(ws), "--profile", str(profile)],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    targets = ["export-openvino@fp16", "export-ortgenai@dml-fp16", "export-ortgenai@cpu-int4"]
    r = subprocess.run([str(BIN / "aipc"), "repro", "-j", "2", *targets], cwd=ws, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "running: export-" in r.stderr  # some stage started beside another
    ours = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    theirs = yaml.safe_load((seq_ws / "dvc.lock").read_text())["stages"]
    assert set(ours) == {"download", "export-openvino-base", "calibration", *targets}
    def artifacts(stage):  # the metrics/cost files hold this run's timings
        return {o["path"]: o["md5"] for o in stage["outs"] if o["path"].startswith("artifacts/")}

    for name in ["export-openvino-base", *targets]:
        assert artifacts(ours[name]) and artifacts(ours[name]) == artifacts(theirs[name]), name
    log = (ws / ".dvc" / "tmp" / "aipc-worker.log").read_text()
    assert log.count("preloaded") == 1, log
    r = subprocess.run([str(BIN / "dvc"), "status", *targets], cwd=ws, env=env, capture_output=True, text=True)
    assert "Data and pipelines are up to date" in r.stdout, r.stdout

