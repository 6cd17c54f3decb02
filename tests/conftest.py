"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from .hubserver import HubServer
except ImportError:
    from hubserver import HubServer


GROUP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_configure(config: pytest.Config) -> None:
    """Nothing a test runs writes into the user's config home: a temporary XDG_CONFIG_HOME per test process
    (inherited by every command a test starts) holds the bundle-signing development key
    (pipeline/package/signing.py) and DVC's global config."""
    import os
    import tempfile

    config._aipc_config_home = tempfile.mkdtemp(prefix="aipc-test-config-")
    os.environ["XDG_CONFIG_HOME"] = config._aipc_config_home


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if getattr(config, "_aipc_config_home", None):
        shutil.rmtree(config._aipc_config_home, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (pyproject: ``-n 2 --dist loadgroup``), each run by one worker:

    * ``models``: the tests that convert or compile models (marked slow), one after another, each holding
      the run's conversions lock (:func:`pytest_runtest_protocol`): never two model conversions at once on
      2 cores, and each session fixture (the tiny models, the NPU worker) built once;
    * ``e2e``: the tests that only read the end-to-end workspace (generate, publish, run the cards' snippets,
      re-validate): inference, on the other worker, while the conversions go on. The workspace is built once
      per run, under the same lock (:func:`repro_workspace`); a test reading it that also converts is marked
      ``converts`` and stays in ``models``;
    * every other test is grouped with its module (its module fixtures built once), and those groups go to
      whichever worker is free."""
    for item in items:
        heavy = item.get_closest_marker("slow") is not None
        reads_e2e = "repro_workspace" in getattr(item, "fixturenames", ())
        if reads_e2e and not heavy:
            raise pytest.UsageError(f"{item.nodeid} reads the end-to-end workspace (a full repro): mark it slow")
        converts = item.get_closest_marker("converts") is not None
        group = ("e2e" if reads_e2e and not converts else "models") if heavy else item.module.__name__
        item.stash[GROUP] = group
        item.add_marker(pytest.mark.xdist_group(group))


def shared_run_dir(config: pytest.Config) -> Path:
    """A folder both pytest-xdist workers of this run share, and no other run: pytest's basetemp
    (pytest-of-<user>/pytest-<N>, kept and removed by pytest's retention like any tmp_path), which is the
    parent of each worker's own popen-gw<i>. (``_tmp_path_factory`` is the handle pytest's own tmp_path
    plugin keeps on the config: hooks get no other.)"""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


_CONVERSIONS: dict[str, object] = {}


def conversions_lock(config: pytest.Config):
    """The run's one conversions lock (a file lock in :func:`shared_run_dir`; reentrant in a process)."""
    from filelock import FileLock

    path = str(shared_run_dir(config) / "conversions.lock")
    return _CONVERSIONS.setdefault(path, FileLock(path))


def _wanted(config: pytest.Config) -> Path:
    return shared_run_dir(config) / "conversions.wanted"


def _someone_waits(config: pytest.Config) -> bool:
    """Whether a live process of this run asked for the conversions lock (:func:`conversions_turn`)."""
    import os

    try:
        pid = int(_wanted(config).read_text() or 0)
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def conversions_turn(config: pytest.Config):
    """The conversions lock for a one-off build (the end-to-end workspace), ahead of the next ``models``
    test: a file lock is not fair, and the models worker takes it again a moment after each test, so a
    waiter says so (``conversions.wanted``) and the models worker lets it go first."""
    import os

    from filelock import Timeout

    lock = conversions_lock(config)
    try:
        lock.acquire(blocking=False)
    except Timeout:  # held by the models worker
        wanted = _wanted(config)
        wanted.write_text(str(os.getpid()))
        try:
            lock.acquire()
        finally:
            wanted.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.release()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A ``models`` test holds the conversions lock from its setup (module fixtures that convert included)
    to its teardown; it lets a waiting one-off build go first."""
    if item.stash.get(GROUP, None) != "models":
        return (yield)
    import time

    while _someone_waits(item.config):
        time.sleep(0.2)
    with conversions_lock(item.config):
        return (yield)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, run by the controller for each worker's collection
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """Refuse to run when ``--dist loadgroup`` would silently not group.

    pytest-xdist 3.8 puts a test's group into its node id (``...@models``); from pytest 9.2 on a node id
    can no longer be changed that way, and every group is spread over both workers (pytest-xdist issue
    1386): model conversions then run two at a time. pyproject pins pytest below 9.2 until xdist fixes it."""
    if node.config.getoption("dist", None) == "loadgroup" and ids and not any("@" in i for i in ids):
        import xdist

        raise pytest.UsageError(
            f"pytest-xdist {xdist.__version__} did not group the tests under pytest {pytest.__version__} (no "
            "'@group' in any test id): the model tests would run two at a time. Install the pinned versions "
            "(bash scripts/setup.sh, requirements/lock.txt) or run with -n 0")


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    """A running local Hub-protocol server (tests/hubserver.py) with its blobs under tmp_path."""
    server = HubServer(root=tmp_path / "hub").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 Phi-3 checkpoint (pipeline.sources.embedded), built once and cached
    under $AIPC_CACHE_DIR / $XDG_CACHE_HOME/aipc / ~/.cache/aipc, shared across test runs."""
    from aipc.pipeline.sources.embedded import embedded_checkpoint

    return embedded_checkpoint()


@pytest.fixture(scope="module")
def hub_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One running HubServer shared by a test module (state accumulates across its tests)."""
    with HubServer(root=tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory, embedded_dir: Path) -> Path:
    """A tiny random-weight Phi-3-mini-4k-shaped checkpoint (2 layers, width 192)."""
    try:
        from .tiny import make_tiny_phi3
    except ImportError:
        from tiny import make_tiny_phi3
    return make_tiny_phi3(tmp_path_factory.mktemp("tiny") / "phi3-mini-4k", embedded_dir)


ROOT = Path(__file__).resolve().parent.parent


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for running `aipc` / `dvc` as a user would: the venv's bin on PATH, offline."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def wait_for(pred, timeout: float, what: str):
    """Poll ``pred`` every 0.1 s until it returns something true (returned), failing after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def detached(cmd: str, cwd: Path, env: dict[str, str]) -> int:
    """Start ``cmd`` as `(cmd &)` from a script does: a background job of a non-interactive shell (SIGINT and
    SIGQUIT ignored, POSIX) whose shell exits at once, so it is reparented (to pid 1 or a subreaper) and
    nobody waits for it; its output goes to out.log / err.log in ``cwd``. Returns its pid. (Not ``exec cmd``:
    bash restores the signals on exec.)"""
    import subprocess

    r = subprocess.run(["bash", "--noprofile", "--norc", "-c", f"{cmd} </dev/null >out.log 2>err.log & echo $!"],
                       cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return int(r.stdout.split()[-1])


def sig_ignored(pid: int, sig: int) -> bool:
    """Whether process ``pid`` ignores ``sig`` (its SigIgn mask in /proc)."""
    import re

    mask = int(re.search(r"^SigIgn:\s*([0-9a-f]+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1), 16)
    return bool(mask >> (sig - 1) & 1)


# The end-to-end repro runs every stage kind at the cheapest settings that still prove the data flow: the
# INT4 export stays data-aware (it reads the calibration stage's windows through DVC) but with AWQ on 8
# windows, 24 s on the embedded model, where the release default (GPTQ + scale estimation) takes 120-180 s
# at any sample count (per-layer solves). The release default itself is exported on a tiny model in
# test_calibration.py; the demo (README command 1) runs it in full on the embedded model.
E2E_INT4 = {"gptq": None, "scale_estimation": None, "awq": True, "num_samples": 8}


def e2e_profile(dest: Path) -> Path:
    """configs/embedded.yaml with the end-to-end test's INT4 settings (:data:`E2E_INT4`), written to ``dest``."""
    import yaml

    profile = yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text())
    profile["openvino"]["variants"]["int4"].update(E2E_INT4)  # a null removes the release key when merged
    dest.write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


@pytest.fixture(scope="session")
def repro_workspace(request: pytest.FixtureRequest, embedded_dir: Path):
    """A run workspace on the embedded model after one full `dvc repro` (the real dvc.yaml).

    Built once per test run, in :func:`shared_run_dir`, by whichever worker needs it first, under the
    conversions lock (the other worker waits, then reads it). Tests only read it; one that changes
    something works on a copy (test_pipeline_e2e.linked_copy). HOME points at an empty folder so the run
    proves OpenVINO telemetry never writes there.
    Returns (workspace path, CompletedProcess of the repro, env).
    """
    import json
    import shutil
    import subprocess
    import sys

    base = shared_run_dir(request.config) / "e2e"
    done = base / "repro.json"
    # the embedded model's cache root stays the shared one (HOME changes), so it is not rebuilt
    env = venv_env(HOME=str(base / "home"), HF_HOME=str(base / "hf"), AIPC_CACHE_DIR=str(embedded_dir.parent.parent))
    ws = base / "ws"
    with conversions_turn(request.config):
        if not done.is_file():
            shutil.rmtree(base, ignore_errors=True)
            (base / "home").mkdir(parents=True)
            aipc = [str(Path(sys.executable).parent / "aipc")]
            subprocess.run(aipc + ["workspace", "init", str(ws), "--profile", str(e2e_profile(base / "e2e.yaml"))],
                           check=True, env=env, cwd=ROOT, capture_output=True)
            # one stream, as a user sees it: a stage's log lines stay under its "Running stage" line
            r = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=ws, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
            done.write_text(json.dumps({"args": r.args, "returncode": r.returncode, "stdout": r.stdout,
                                        "stderr": ""}))  # merged into stdout
    rec = json.loads(done.read_text())
    return ws, subprocess.CompletedProcess(rec["args"], rec["returncode"], rec["stdout"], rec["stderr"]), env
