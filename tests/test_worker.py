"""The repro's warm worker (aipc.worker): heavy ``aipc`` commands under DVC run as forks of one
process that imported the toolchain once. These tests start real workers (each preloads ~9 s)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aipc import worker

try:
    from .conftest import ROOT, detached, sig_ignored, venv_env, wait_for
except ImportError:
    from conftest import ROOT, detached, sig_ignored, venv_env, wait_for

AIPC = str(Path(sys.executable).parent / "aipc")


def test_the_subcommand_is_found_past_the_group_options():
    assert worker._command(["aipc", "--cost-metrics", "m.json", "export", "openvino", "int4"]) == "export"
    assert worker._command(["aipc", "-v", "--params", "p.yaml", "-q", "smoke", "npu", "int8"]) == "smoke"
    assert worker._command(["aipc", "--params", "export", "bundle", "x"]) == "bundle"  # a value, not a command
    assert worker._command(["aipc", "--help"]) is None
    assert worker._command(["aipc"]) is None
    # the prewarm reads params.yaml from the same parse
    assert worker._parse(["aipc", "-v", "--params", "p.yaml", "download"])[1]["params_path"] == Path("p.yaml")
    assert worker._parse(["aipc", "download"])[1]["params_path"] == Path("params.yaml")


def test_the_environment_key_ignores_only_the_stage_and_shell_variables():
    env = {"HF_HOME": "/a", "DVC_ROOT": "/ws", "PATH": "/bin"}
    same = dict(env, DVC_STAGE="export-openvino@int4", SHLVL="2", _="/bin/aipc", PWD="/ws", OLDPWD="/")
    assert worker._env_key(env) == worker._env_key(same)
    for k, v in (("HF_HOME", "/b"), ("HF_HUB_OFFLINE", "1"), ("OMP_NUM_THREADS", "1")):
        assert worker._env_key(env) != worker._env_key(dict(env, **{k: v})), k


def test_the_owner_is_the_nearest_ancestor_that_is_not_a_shell():
    code = "from aipc.worker import owner_pid; print(owner_pid())"
    # bash runs a pipeline in forked subshells: python -> bash -> bash -> this test process
    r = subprocess.run(["bash", "-c", f"{sys.executable} -c '{code}' | cat"], capture_output=True, text=True,
                       check=True)
    assert int(r.stdout) == os.getpid()


def test_outside_dvc_or_switched_off_a_command_runs_in_its_own_process(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert worker.delegate(["aipc", "export", "--help"]) is None
    monkeypatch.setenv("DVC_STAGE", "x")
    monkeypatch.setenv("AIPC_WORKER", "0")
    assert worker.delegate(["aipc", "export", "--help"]) is None
    monkeypatch.setenv("AIPC_WORKER", "auto")
    assert worker.delegate(["aipc", "bundle", "--help"]) is None  # not a heavy command


@pytest.mark.slow
def test_preloading_leaves_no_thread_a_fork_would_break_and_forked_children_compute():
    """The fork-safety premise: after the preload only OpenBLAS's thread servers run (they stop before a
    fork and restart in the child); numpy, torch (OpenMP) and OpenVINO then work in forked children."""
    code = """
import os, sys
from aipc.worker import preload, foreign_threads
preload()
assert foreign_threads() == 0, foreign_threads()
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        import numpy as np, torch, openvino as ov
        a = np.random.default_rng(0).standard_normal((512, 512))
        assert np.allclose(a @ np.eye(512), a)
        t = torch.randn(256, 256)
        assert torch.allclose(t @ torch.eye(256), t)
        assert ov.Core().available_devices
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def _log(root: Path) -> str:
    p = root / ".dvc" / "tmp" / "aipc-worker.log"
    return p.read_text() if p.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of a process that is not ours to reap counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


@pytest.mark.slow
def test_stage_commands_run_in_one_worker_with_their_output_exit_codes_and_signals(tmp_path):
    """As DVC runs them ($SHELL -c, DVC_STAGE set; this test process is the owner): one preload serves
    every command; output, exit codes and errors are those of a fresh process; SIGINT reaches the
    command; a command that dies takes its child with it; a different environment is not served."""
    fifo = tmp_path / "params.fifo"
    os.mkfifo(fifo)
    env = venv_env(DVC_ROOT=str(tmp_path), DVC_STAGE="export-openvino@x", AIPC_WORKER_IDLE="60")
    params = str(ROOT / "params.yaml")

    def sh(cmd: str, **kw):
        return subprocess.Popen(["bash", "--noprofile", "--norc", "-c", cmd], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    worker_pid = None
    try:
        r = sh(f"{AIPC} export --help")
        out, err = r.communicate(timeout=240)
        assert r.returncode == 0 and "openvino-base" in out, err
        log = _log(tmp_path)
        assert log.count("preloaded") == 1 and "pid " in log, log
        worker_pid = int(re.search(r"worker\[(\d+)\]", log).group(1))

        t0 = time.monotonic()
        r = sh(f"{AIPC} --params {params} export openvino no-such-variant")
        out, err = r.communicate(timeout=60)
        assert r.returncode == 2 and "openvino.variants has no 'no-such-variant'" in err and "Traceback" not in err
        assert time.monotonic() - t0 < 5, "a served command does not import the toolchain again"
        assert _log(tmp_path).count("preloaded") == 1

        # SIGINT to the command (what Ctrl-C in a terminal does) is passed on to the child
        r = sh(f"exec {AIPC} --params {fifo} export openvino x")
        line = wait_for(lambda: re.search(rf"pid (\d+): aipc --params {re.escape(str(fifo))}", _log(tmp_path)), 30,
                         "the child to start")
        child = int(line.group(1))
        time.sleep(0.3)  # the child is blocked opening the FIFO
        r.send_signal(signal.SIGINT)
        out, err = r.communicate(timeout=30)
        assert r.returncode == 130 and "aipc: interrupted" in err, (r.returncode, err)
        wait_for(lambda: not _alive(child), 10, "the interrupted child to exit")

        # the command killed outright: the worker stops its child
        r = sh(f"exec {AIPC} --params {fifo} export openvino y")
        line = wait_for(lambda: re.search(rf"pid (\d+): aipc --params {re.escape(str(fifo))} export openvino y",
                                           _log(tmp_path)), 30, "the second child to start")
        child = int(line.group(1))
        r.kill()
        r.communicate(timeout=30)
        wait_for(lambda: not _alive(child), 30, "the orphaned child to be stopped")

        # another environment (here HF_HOME) is never served by this worker: its own worker starts
        r = subprocess.run(["bash", "-c", f"{AIPC} smoke --help"], env=dict(env, HF_HOME=str(tmp_path / "hf2")),
                           cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0 and "Usage: aipc smoke" in r.stdout
        pids = set(re.findall(r"worker\[(\d+)\] INFO preloaded", _log(tmp_path)))
        assert len(pids) == 2, _log(tmp_path)
        assert _alive(worker_pid)
    finally:
        for pid in set(re.findall(r"worker\[(\d+)\]", _log(tmp_path))):
            if _alive(int(pid)):
                os.kill(int(pid), signal.SIGTERM)


@pytest.mark.slow
def test_the_worker_exits_with_the_repro_that_started_it(tmp_path):
    owner = ("import subprocess, sys; r = subprocess.run(['bash', '-c', sys.argv[1]]); sys.exit(r.returncode)")
    env = venv_env(DVC_ROOT=str(tmp_path), DVC_STAGE="smoke-openvino@int4")
    r = subprocess.run([sys.executable, "-c", owner, f"{AIPC} smoke --help"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "Usage: aipc smoke" in r.stdout, r.stderr
    log = _log(tmp_path)
    pid = int(re.search(r"worker\[(\d+)\] INFO preloaded", log).group(1))
    wait_for(lambda: not _alive(pid), 15, "the worker to exit after its owner")
    assert "the owner exited; stopping" in _log(tmp_path)


@pytest.mark.slow
def test_the_npu_environment_helper_runs_forked_from_its_own_worker(tmp_path, monkeypatch):
    """The NPU environment's helper (python -m aipc_npu) through aipc.worker.start_process: a worker of
    that interpreter preloads torch / transformers / the library once; each helper is a fork of it, driven
    like a Popen (pipes, wait, exit status), and its peak RSS and CPU reach our cost metrics."""
    from aipc.pipeline import cost
    from aipc.pipeline.config import load_params
    from aipc.pipeline.export import npu

    spec = npu.helper_worker(load_params(ROOT / "params.yaml"))
    if spec is None:
        pytest.skip("no NPU environment (bash envs/npu/setup.sh)")
    python, env = spec
    monkeypatch.setenv("DVC_STAGE", "export-npu@int4")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("AIPC_WORKER_IDLE", "60")
    # this test process stands for the repro (its own ancestors may all be shells, up to init)
    monkeypatch.setenv("AIPC_WORKER_OWNER", str(os.getpid()))
    monkeypatch.setattr(cost, "_remote", {"maxrss_kib": 0, "cpu_s": 0.0})
    try:
        for _ in range(2):
            with open(os.devnull, "rb") as devnull, open(tmp_path / "err.log", "wb") as err:
                proc = worker.start_process("npu", python, "aipc_npu", ["info"], env, str(tmp_path), devnull.fileno(),
                                            None, err.fileno())
                assert isinstance(proc, worker.RemoteProcess)
                out = proc.stdout.read()
                assert proc.wait(timeout=60) == 0 and proc.poll() == 0
            info = json.loads(out.decode().strip().splitlines()[-1])
            assert info["ok"] and info["versions"]["intel-npu-acceleration-library"] == "1.4.0"
            assert info["prefix"] == str(Path(python).parent.parent)
        log = (tmp_path / ".dvc" / "tmp" / "aipc-worker-npu.log").read_text()
        assert log.count("INFO preloaded torch, transformers, intel_npu_acceleration_library") == 1, log
        assert log.count(": aipc_npu info") == 2, log
        assert cost._remote["maxrss_kib"] > 50_000, "the forked helper's peak RSS is reported"
        # through the exporter's own call, with the error path: a bad --dtype is the helper's usage error
        from aipc.pipeline.errors import PipelineError

        worker.install()  # what `aipc` does at start: the library's helpers go through pipeline.processes
        with pytest.raises(PipelineError) as exc:
            npu.run_helper(Path(python), ["compile", "--src", str(tmp_path), "--out", str(tmp_path / "o"),
                                          "--dtype", "int3"], "a bad dtype")
        assert "int3" in str(exc.value)
        log = (tmp_path / ".dvc" / "tmp" / "aipc-worker-npu.log").read_text()
        assert ": aipc_npu compile" in log, "the exporter's helper was forked from the NPU worker"
    finally:
        npu_log = tmp_path / ".dvc" / "tmp" / "aipc-worker-npu.log"
        for pid in set(re.findall(r"worker\[(\d+)\]", npu_log.read_text() if npu_log.exists() else "")):
            if _alive(int(pid)):
                os.kill(int(pid), signal.SIGTERM)


def test_cost_metrics_say_how_the_stage_process_started(tmp_path, monkeypatch):
    from aipc.pipeline.cost import measure

    monkeypatch.delenv("AIPC_WORKER_CHILD", raising=False)
    with measure("a", tmp_path / "a.json"):
        pass
    monkeypatch.setenv("AIPC_WORKER_CHILD", "1")
    with measure("b", tmp_path / "b.json"):
        pass
    assert json.loads((tmp_path / "a.json").read_text())["process"] == "fresh"
    assert json.loads((tmp_path / "b.json").read_text())["process"] == "worker-fork"


def test_a_remote_childs_peak_and_cpu_count_as_a_childs(tmp_path, monkeypatch):
    from aipc.pipeline import cost

    monkeypatch.setattr(cost, "_remote", {"maxrss_kib": 0, "cpu_s": 0.0})
    with measure_to(tmp_path / "c.json"):
        cost.add_remote_child(8 << 20, 12.5)  # 8 GiB, 12.5 s
    m = json.loads((tmp_path / "c.json").read_text())
    assert m["peak_rss_children_mib"] == 8192 and m["peak_rss_mib"] == 8192 and m["cpu_s"] >= 12.5


def measure_to(path):
    from aipc.pipeline.cost import measure

    return measure(path.stem, path)


@pytest.mark.slow
def test_sigterm_to_a_detached_dvc_repro_stops_the_stage_forked_by_its_worker(tmp_path):
    """`(dvc repro &)` from a script (SIGINT inherited ignored, reparented), later `kill <dvc pid>`: the worker
    sees its owner exit and interrupts the stage it forked (whose SIGINT handler it sets itself), then exits."""
    fifo = tmp_path / "params.fifo"
    os.mkfifo(fifo)  # the forked stage blocks opening it until it is stopped
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True,
                   env=venv_env())
    (tmp_path / "dvc.yaml").write_text(json.dumps(
        {"stages": {"hang": {"cmd": f"{AIPC} --params {fifo} export openvino x", "outs": ["x.out"]}}}))
    dvc_pid = detached(f"{Path(sys.executable).parent / 'dvc'} repro", tmp_path, venv_env(AIPC_WORKER_IDLE="120"))
    try:
        line = wait_for(lambda: re.search(r"pid (\d+): aipc --params", _log(tmp_path)), 240, "the forked stage")
        child = int(line.group(1))
        worker_pid = int(re.search(r"worker\[(\d+)\]", _log(tmp_path)).group(1))
        assert sig_ignored(dvc_pid, signal.SIGINT), "not started as a detached job is"
        t0 = time.monotonic()
        os.kill(dvc_pid, signal.SIGTERM)
        wait_for(lambda: not _alive(child), 30, "the forked stage to stop")
        wait_for(lambda: not _alive(worker_pid), 30, "the worker to exit")
        assert time.monotonic() - t0 < 20
        assert not _alive(dvc_pid)
        assert "the owner exited; stopping" in _log(tmp_path)
        assert not (tmp_path / "dvc.lock").exists()
    finally:
        for pid in {dvc_pid, *map(int, re.findall(r"worker\[(\d+)\]", _log(tmp_path)))}:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
