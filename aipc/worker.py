"""A warm worker for the stages of one ``dvc repro``: the toolchain is imported once, each stage is a fork.

Every stage in dvc.yaml is a fresh ``aipc`` process, and importing torch, transformers, OpenVINO, NNCF
and optimum-intel takes ~9 s of each (``python -X importtime``): at Phi-3-mini layer shapes that is as
long as an export's own work, and the full pipeline runs some 25 such stages. Under ``dvc repro``
(DVC sets ``DVC_STAGE`` for every stage command), a heavy ``aipc`` command therefore hands itself to a
worker instead of importing:

* the first such command starts the worker (``python -P -m aipc.worker``), which imports the
  toolchain once and then listens on an abstract Unix socket whose name is derived from the user, the
  interpreter, the DVC process and the environment (so only an identical setup is ever served);
* each command sends its argv, working directory, environment and its stdin/stdout/stderr
  (SCM_RIGHTS); the worker forks, the child takes over those descriptors and runs the very click
  command a fresh process would run, and its exit status goes back to the command, which exits with
  it. Signals the command receives are passed on to the child; if the command dies, the child gets
  SIGINT (so ``atomic_dir`` removes its partial output) and SIGKILL after a grace period;
* the worker exits when the DVC process it belongs to exits, or after ``AIPC_WORKER_IDLE`` seconds
  without a job, so nothing outlives the repro.

Only third-party modules are preloaded, and only ones that start no threads at import (forking a
process with threads is unsafe): the project's own code is imported fresh in every child, so a stage
always runs the code DVC hashed as its dependency. Outside DVC, with ``AIPC_WORKER=0``, or when
anything about the worker fails, the command runs in its own process as before: the worker is a cache
of imports, never a requirement.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("aipc.worker")

# Preloaded once per repro, per environment. onnxruntime is left out on purpose: importing it starts a
# native thread (state a forked child would inherit without the thread); the ORT GenAI stages import it
# themselves. "npu" is the isolated NPU environment's helper (envs/npu: python -m aipc_npu).
PROFILES = {
    "aipc": ("torch", "transformers", "openvino", "nncf", "optimum.intel.openvino", "optimum.exporters.openvino",
             "openvino_genai"),
    "npu": ("torch", "transformers", "intel_npu_acceleration_library", "neural_compressor"),
}
# Commands that import the toolchain: they run in the worker. Others (download, bundle, report, ...)
# import little; ``download`` only starts the worker, so it imports while the download runs.
HEAVY = frozenset({"export", "reference", "calibration", "smoke", "validate"})
PREWARM = frozenset({"download"})
# DVC_STAGE differs per stage by design; the rest are what a shell sets for the command it runs. Every
# other variable must match the worker's, since libraries read some of them when they are imported.
ENV_IGNORED = frozenset({"DVC_STAGE", "SHLVL", "_", "PWD", "OLDPWD", "PS1"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})
READY_TIMEOUT_S = 180.0
PREWARM_NICE = 10
HANGUP_GRACE_S = 20.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_MSG = 1 << 20


# --------------------------------------------------------------------------- shared


def _env_key(env: dict[str, str]) -> str:
    items = sorted((k, v) for k, v in env.items() if k not in ENV_IGNORED)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def address(owner: int, env: dict[str, str] | None = None, python: str | None = None) -> bytes:
    """The abstract socket name of the worker for this user, interpreter, DVC process and environment."""
    key = json.dumps([os.getuid(), python or sys.executable, owner, _env_key(dict(os.environ if env is None else env))])
    return b"\0aipc-worker-" + hashlib.sha256(key.encode()).hexdigest()[:32].encode()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    return comm, int(raw[raw.rindex(")") + 2:].split()[1])


def owner_pid() -> int | None:
    """The process that runs this stage: the nearest ancestor that is not a shell (``dvc repro``), or, in a
    stage forked from a worker, that worker's owner (``AIPC_WORKER_OWNER``)."""
    inherited = os.environ.get("AIPC_WORKER_OWNER", "")
    if inherited.isdigit() and _proc_stat(int(inherited)) is not None:
        return int(inherited)
    pid = os.getppid()
    for _ in range(16):
        stat = _proc_stat(pid)
        if stat is None or pid <= 1:
            return None
        comm, ppid = stat
        if comm not in SHELLS:
            return pid
        pid = ppid
    return None


def install() -> None:
    """Let the library start its helper processes through this repro's workers (:mod:`pipeline.processes`:
    the library does not import the machinery; the machinery registers itself)."""
    from aipc.pipeline import processes

    processes.register(start_process)


def mode() -> str:
    """``AIPC_WORKER``: ``auto`` (default: under DVC), ``0``/``off`` (never)."""
    value = os.environ.get("AIPC_WORKER", "auto").strip().lower()
    return "off" if value in ("0", "off", "false", "no") else "auto"


# --------------------------------------------------------------------------- client side


def split_command(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``aipc``'s argv split into the subcommand with its arguments, and the group's options, parsed by the
    ``aipc`` group itself (click's ``parse_args``, resilient: no callbacks, no errors, no ``--help`` exit)."""
    import click

    from aipc.stages.cli import main

    ctx = click.Context(main, info_name="aipc", resilient_parsing=True)
    with ctx.scope(cleanup=False):
        # the group's options only (Command.parse_args): what is left starts with the subcommand
        rest = click.Command.parse_args(main, ctx, list(argv[1:]))
    return list(rest), dict(ctx.params)


def _parse(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The aipc subcommand in ``argv`` and the group's options."""
    rest, options = split_command(argv)
    return (rest[0] if rest else None), options


def _command(argv: list[str]) -> str | None:
    """The aipc subcommand in ``argv`` (the group's options and their values skipped), or None."""
    return _parse(argv)[0]


def _spawn(owner: int, addr: bytes, profile: str, python: str, env: dict[str, str], nice: int) -> subprocess.Popen:
    root = Path(os.environ.get("DVC_ROOT", "."))
    logfile = root / ".dvc" / "tmp" / ("aipc-worker.log" if profile == "aipc" else f"aipc-worker-{profile}.log")
    try:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        err: Any = open(logfile, "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        err = subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [python, "-P", "-m", "aipc.worker", "--address", addr[1:].decode(), "--owner", str(owner),
             "--profile", profile, "--nice", str(nice)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, start_new_session=True, close_fds=True,
        )
    finally:
        if err is not subprocess.DEVNULL:
            err.close()


def _connect(addr: bytes) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(addr)
        return s
    except OSError:
        s.close()
        return None


def _connect_or_start(owner: int, wait: bool, profile: str = "aipc", python: str | None = None,
                      env: dict[str, str] | None = None) -> socket.socket | None:
    """A connection to the worker; start it when there is none (and wait for it only if ``wait``)."""
    python = python or sys.executable
    env = dict(os.environ) if env is None else env
    addr = address(owner, env, python)
    s = _connect(addr)
    if s is not None:
        return s
    # a worker started ahead of need imports at low CPU priority: on idle cycles, not the running stage's
    proc = _spawn(owner, addr, profile, python, env, nice=0 if wait else PREWARM_NICE)
    if not wait:
        return None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        s = _connect(addr)
        if s is not None:
            return s
        if proc.poll() is not None:  # it exited: another command's worker may hold the address
            return _connect(addr)
        time.sleep(0.05)
    return None


def under_dvc() -> bool:
    """Whether commands may use workers: inside a ``dvc repro`` stage, not switched off, on Linux."""
    return mode() != "off" and "DVC_STAGE" in os.environ and sys.platform.startswith("linux")


def delegate(argv: list[str]) -> int | None:
    """Run ``aipc argv`` in this repro's worker and return its exit status, or None to run it here."""
    if not under_dvc() or os.environ.get("AIPC_WORKER_CHILD"):
        return None
    try:
        command, options = _parse(argv)
    except Exception:  # noqa: BLE001 - never let the accelerator break a command
        return None
    if command not in HEAVY and command not in PREWARM:
        return None
    owner = owner_pid()
    if owner is None:
        return None
    try:
        conn = _connect_or_start(owner, wait=command in HEAVY)
        if command in PREWARM:
            _prewarm_other_environments(options, owner)
    except OSError:
        return None
    if conn is None or command not in HEAVY:
        if conn is not None:
            conn.close()
        return None
    with conn:
        return _run_remote(conn, argv)


def _prewarm_other_environments(options: dict[str, Any], owner: int) -> None:
    """Start the NPU environment's worker too (it imports while the first stages run), when params.yaml
    (the group's ``--params``, as parsed by :func:`_parse`) has NPU variants and the environment exists."""
    try:
        from aipc.pipeline.config import load_params
        from aipc.pipeline.export.npu import helper_worker

        spec = helper_worker(load_params(Path(options["params_path"])))
    except Exception as err:  # noqa: BLE001 - the download itself reports a bad params.yaml
        log.debug("no NPU worker prewarm: %s", err)
        return
    if spec is not None:
        conn = _connect_or_start(owner, wait=False, profile="npu", python=spec[0], env=spec[1])
        if conn is not None:
            conn.close()


class RemoteProcess:
    """A process forked by a worker of another environment, driven like a ``subprocess.Popen``."""

    def __init__(self, conn: socket.socket, pid: int, stdin, stdout):
        self._conn, self.pid, self.stdin, self.stdout = conn, pid, stdin, stdout
        self.returncode: int | None = None

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(MAX_MSG)
        except (TimeoutError, BlockingIOError):
            return None
        msg = json.loads(data) if data else {"exit": 1}
        self.returncode = int(msg["exit"])
        self._conn.close()
        if "maxrss_kib" in msg:  # this process's child for the cost metrics, though the worker forked it
            from aipc.pipeline.cost import add_remote_child

            add_remote_child(msg["maxrss_kib"], msg["cpu_s"])
        return self.returncode

    def poll(self) -> int | None:
        return self._collect(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            _kill(self.pid, signal.SIGKILL)


def start_process(profile: str, python: str, module: str, args: list[str], env: dict[str, str], cwd: str,
                  stdin: int | None, stdout: int | None, stderr: int) -> RemoteProcess | None:
    """``python -m module args`` forked from the ``profile`` worker of that environment (started and waited
    for if needed), under DVC only; None to start it the ordinary way. ``stdin``/``stdout`` are file
    descriptors, or None for a pipe (``.stdin`` / ``.stdout`` of the result, binary)."""
    if not under_dvc():
        return None
    owner = owner_pid()
    if owner is None:
        return None
    try:
        conn = _connect_or_start(owner, wait=True, profile=profile, python=python, env=env)
    except OSError:
        return None
    if conn is None:
        return None
    ours: list[int] = []
    theirs: list[int] = []
    try:
        fds = []
        for fd, reading in ((stdin, True), (stdout, False)):
            if fd is None:
                r, w = os.pipe()
                ours.append(w if reading else r)
                theirs.append(r if reading else w)
                fds.append(theirs[-1])
            else:
                fds.append(fd)
        fds.append(stderr)
        pid = _submit(conn, {"module": module, "argv": [module, *args], "cwd": cwd, "env": env}, fds)
    except OSError:  # no pipe to be had: start it the ordinary way
        pid = None
    finally:
        for fd in theirs:
            os.close(fd)
    if pid is None:
        for fd in ours:
            os.close(fd)
        conn.close()
        return None
    it = iter(ours)
    pin = os.fdopen(next(it), "wb") if stdin is None else None
    pout = os.fdopen(next(it), "rb") if stdout is None else None
    return RemoteProcess(conn, pid, pin, pout)


def _submit(conn: socket.socket, req: dict[str, Any], fds: list[int]) -> int | None:
    """Send a request with its stdin/stdout/stderr; the pid of the worker's fork, or None when it was refused
    (e.g. the environment differs) or the worker went away before forking: then run it the ordinary way."""
    try:
        socket.send_fds(conn, [json.dumps(req).encode()], fds)
        # the worker answers once it has preloaded (a command may connect while it imports)
        first = json.loads(conn.recv(MAX_MSG) or b"{}")
    except (OSError, ValueError):
        return None
    return int(first["pid"]) if "pid" in first else None


def _run_remote(conn: socket.socket, argv: list[str]) -> int | None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    child = _submit(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
    if child is None:
        return None
    old = {s: signal.signal(s, lambda signum, _frame: _kill(child, signum)) for s in FORWARDED}
    try:
        data = conn.recv(MAX_MSG)  # a forwarded signal's handler returns; recv is retried (PEP 475)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if not data:
        sys.stderr.write("aipc: error: the worker process ended before the command finished\n"
                         "aipc: fix: run the stage again; set AIPC_WORKER=0 to run every command in its own process\n")
        return 1
    return int(json.loads(data)["exit"])


# --------------------------------------------------------------------------- worker side


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def foreign_threads() -> int:
    """Threads besides the main one that a fork would not handle.

    OpenBLAS (numpy's and scipy's) starts its thread servers when it loads and stops them before a
    fork (``pthread_atfork``), restarting them in the child on first use: those are counted out, by
    the thread counts threadpoolctl reads from the loaded libraries. Anything else (an OpenMP pool
    that ran, a telemetry or logging thread) makes forking unsafe.
    """
    blas = 0
    try:
        from threadpoolctl import threadpool_info

        blas = sum(max(0, int(i["num_threads"]) - 1) for i in threadpool_info() if i.get("internal_api") == "openblas")
    except Exception:  # noqa: BLE001 - without threadpoolctl every extra thread counts
        blas = 0
    return _threads() - 1 - blas


def preload(profile: str = "aipc") -> float:
    t0 = time.perf_counter()
    if profile != "npu":  # the NPU environment has no OpenVINO, and runs this file from the checkout, uninstalled
        from aipc.pipeline.toolchain import disable_telemetry  # standard library only

        disable_telemetry()
    for name in PROFILES[profile]:
        try:
            __import__(name)
        except ImportError as err:  # pragma: no cover - a missing optional package is imported by the child
            log.warning("preload: %s not importable (%s)", name, err)
    # The project's modules must be imported fresh in every child (DVC hashed them as deps).
    # (the NPU environment imports the library as the top-level ``pipeline``, from the checkout)
    for name in [m for m in sys.modules if m.split(".")[0] in ("pipeline", "aipc_npu")
                 or m.split(".")[:2] in (["aipc", "pipeline"], ["aipc", "stages"], ["aipc", "validation"])]:
        if name != __name__:
            del sys.modules[name]
    return time.perf_counter() - t0


class _Job:
    def __init__(self, conn: socket.socket, pid: int, pidfd: int):
        self.conn, self.pid, self.pidfd = conn, pid, pidfd
        self.hangup_at: float | None = None


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N, as a shell reports it


def _run_child(req: dict[str, Any], fds: list[int], owner: int) -> None:
    """In the forked child: become the command's process and run it. Never returns."""
    code = 1
    try:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        import io

        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), errors="strict")  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=os.isatty(1),  # noqa: SIM115
                                      errors="strict")
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True,  # noqa: SIM115
                                      errors="backslashreplace")
        logging.root.handlers.clear()
        logging.root.setLevel(logging.WARNING)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["AIPC_WORKER_CHILD"] = "1"
        os.environ["AIPC_WORKER_OWNER"] = str(owner)  # a worker of another environment belongs to the same repro
        sys.argv = list(req["argv"])
        try:
            if req.get("module"):  # python -m MODULE ARGS
                import runpy

                runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
            else:
                from aipc.stages.cli import main

                install()  # the stage's own helper processes (the NPU library's) fork from their env's worker
                main.main(args=sys.argv[1:], prog_name="aipc", standalone_mode=True)
            code = 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
            if not isinstance(ex.code, int) and ex.code is not None:
                sys.stderr.write(f"{ex.code}\n")
        import threading

        for t in threading.enumerate():  # a fresh interpreter waits for non-daemon threads at exit
            if t is not threading.main_thread() and not t.daemon:
                t.join()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the same traceback a fresh process would print
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve(addr: bytes, owner: int, idle_s: float, profile: str = "aipc") -> int:
    """Preload, then fork a child per request until the owner exits or ``idle_s`` pass without a job.

    If preloading left threads behind, forking is unsafe: the worker still holds the address but
    refuses every request, so each command runs in its own process instead of starting a worker again.
    """
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        owner_fd = os.pidfd_open(owner)
    except OSError as err:
        log.info("cannot watch the owner %d (%s); not starting", owner, err)
        return 0
    env_key = _env_key(dict(os.environ))  # before the imports, which may set variables of their own
    # Listen first: a command started meanwhile connects and waits instead of starting another worker.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(addr)
    except OSError:
        log.info("another worker serves this address; exiting")
        return 0
    listener.listen(16)
    took = preload(profile)
    foreign = foreign_threads()
    refuse = None if foreign == 0 else f"{foreign} non-BLAS threads after preloading: forking would be unsafe"
    server = _Server(listener, owner_fd, owner, env_key, refuse)
    log.info("preloaded %s in %.1f s; %s for pid %d", ", ".join(PROFILES[profile]), took,
             f"refusing ({refuse})" if refuse else "serving", owner)
    server.loop(idle_s)
    logging.shutdown()
    os._exit(0)  # skip the interpreter's teardown of the preloaded toolchain (seconds of CPU for nothing)


class _Server:
    def __init__(self, listener: socket.socket, owner_fd: int, owner: int, env_key: str, refuse: str | None):
        self.listener, self.owner_fd, self.owner, self.env_key, self.refuse = listener, owner_fd, owner, env_key, refuse
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(owner_fd, selectors.EVENT_READ, ("owner", None))
        self.jobs: dict[int, _Job] = {}

    def loop(self, idle_s: float) -> None:
        last = time.monotonic()
        while True:
            hanging = any(j.hangup_at is not None for j in self.jobs.values())
            events = self.sel.select(1.0 if hanging else max(0.0, last + idle_s - time.monotonic()))
            now = time.monotonic()
            if not events and not self.jobs and now - last >= idle_s:
                log.info("idle for %.0f s; exiting", idle_s)
                break
            stop = False
            for key, _ in events:
                tag, fd = key.data
                if tag == "owner":
                    stop = True
                elif tag == "listen":
                    conn, _ = self.listener.accept()
                    self._accept(conn)
                elif tag == "exit":
                    self._reap(self.jobs.pop(fd))
                    last = time.monotonic()
                elif tag == "conn":  # the command went away: stop its child (SIGINT first, so it cleans up)
                    job = self.jobs[fd]
                    self.sel.unregister(job.conn)
                    if job.hangup_at is None:
                        job.hangup_at = now
                        _kill(job.pid, signal.SIGINT)
            for job in self.jobs.values():
                if job.hangup_at is not None and now - job.hangup_at > HANGUP_GRACE_S:
                    _kill(job.pid, signal.SIGKILL)
            if stop:
                log.info("the owner exited; stopping")
                break
        for job in self.jobs.values():
            _kill(job.pid, signal.SIGINT)
        self.listener.close()

    def _reap(self, job: _Job) -> None:
        _, status, usage = os.wait4(job.pid, 0)
        self.sel.unregister(job.pidfd)
        if job.hangup_at is None:
            self.sel.unregister(job.conn)
        os.close(job.pidfd)
        code = _exit_code(status)
        log.info("pid %d exited %d", job.pid, code)
        try:
            job.conn.send(json.dumps({"exit": code, "maxrss_kib": usage.ru_maxrss,
                                      "cpu_s": usage.ru_utime + usage.ru_stime}).encode())
        except OSError:
            pass
        job.conn.close()

    def _close_inherited(self) -> None:
        """In a forked child: close what belongs to the worker (by their objects, so no fd is closed twice)."""
        self.sel.close()
        self.listener.close()
        os.close(self.owner_fd)
        for j in self.jobs.values():
            j.conn.close()
            os.close(j.pidfd)

    def _accept(self, conn: socket.socket) -> None:
        import struct

        fds: list[int] = []
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            uid = struct.unpack("3i", creds)[1]
            if uid != os.getuid():
                raise ValueError(f"peer uid {uid} is not ours")
            msg, fds, _, _ = socket.recv_fds(conn, MAX_MSG, 8)
            req = json.loads(msg)
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} file descriptors instead of 3")
            refuse = self.refuse or ("the environment differs from the worker's"
                                     if _env_key(req["env"]) != self.env_key else None)
            if refuse:
                conn.send(json.dumps({"refused": refuse}).encode())
                raise ValueError(refuse)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.info("refused a request: %s", err)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            try:
                self._close_inherited()
                conn.close()
            finally:
                _run_child(req, fds, self.owner)
        for fd in fds:
            os.close(fd)
        log.info("pid %d: %s %s (%s)", pid, req.get("module") or "aipc", " ".join(req["argv"][1:]),
                 req["env"].get("DVC_STAGE", ""))
        job = _Job(conn, pid, os.pidfd_open(pid))
        self.jobs[job.pidfd] = job
        self.sel.register(job.pidfd, selectors.EVENT_READ, ("exit", job.pidfd))
        self.sel.register(job.conn, selectors.EVENT_READ, ("conn", job.pidfd))
        try:
            conn.send(json.dumps({"pid": pid}).encode())
        except OSError:
            pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m aipc.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True, help="abstract socket name (without the leading NUL)")
    ap.add_argument("--owner", type=int, required=True, help="serve while this process lives")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="aipc", help="what to preload")
    ap.add_argument("--nice", type=int, default=0, help="lower the CPU priority by this much (os.nice)")
    args = ap.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    idle = float(os.environ.get("AIPC_WORKER_IDLE", "600"))
    return serve(b"\0" + args.address.encode(), args.owner, idle, args.profile)


if __name__ == "__main__":
    sys.exit(main())
