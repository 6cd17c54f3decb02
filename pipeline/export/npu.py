"""intel-npu-acceleration-library 1.4.0 artifacts, made and run in the isolated NPU environment.

The library needs transformers 4.x, numpy 1.x and openvino 2024.4, which cannot live in the main
environment, so it runs in its own venv (``params.npu.env_dir``, built by ``envs/npu/setup.sh``)
through the small helper package ``envs/npu/aipc_npu`` (``python -m aipc_npu``). This module is
the main-environment side:

* :func:`export` compiles one ``npu.variants`` entry into an artifact folder: ``model.pt`` (a
  ``torch.save`` pickle of the whole quantized transformers module: the library has no other way
  to ship a compiled model), the tokenizer/config files and ``aipc_export.json``, which records
  the sha256 of every file and the NPU environment's versions the pickle is tied to;
* :func:`load_npu_artifact` is the ONE supported way to open such an artifact: it refuses any file
  whose sha256 differs from ``aipc_export.json`` and any environment whose torch / transformers /
  library versions differ from the recorded ones, then starts a worker in the NPU environment,
  which checks the sha256 again on the very file object it unpickles (``torch.load(...,
  weights_only=False)`` runs code: it must only ever see the recorded bytes).

With no NPU present the library falls back to OpenVINO's CPU plugin; the export record says
``"device_fallback": "CPU"`` and every generation carries a note. That is not an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Final

from ..config import NPUSection, Params
from ..errors import ArtifactIntegrityError, ContextTooLong, EnvironmentProblem, ExportError, PipelineError, SourceError
from ..cost import note_device
from ..records import EXPORT_JSON, FileEntry, NPUCompile, NPUExportRecord
from ..fsutil import atomic_dir, file_table, read_json, sha256_file
from ..sources.checkpoint import read_model_config
from ..toolchain import versions
from ..workspace import REPO_ROOT

log = logging.getLogger(__name__)

BACKEND: Final = "npu"
MODEL_FILE = "model.pt"
LIBRARY = "intel-npu-acceleration-library"
LIBRARY_VERSION = "1.4.0"
HELPER_DIR = REPO_ROOT / "envs" / "npu"  # holds the aipc_npu package run inside the NPU env
SETUP_SCRIPT = "envs/npu/setup.sh"
# The pickle references these packages' classes: it loads only where all three match.
PICKLE_TIED_TO = (LIBRARY, "torch", "transformers")
# The loader shipped in every artifact (and so in every bundle): a consumer needs nothing of this project
LOADER_SOURCE = HELPER_DIR / "aipc_npu" / "loader.py"
LOADER_FILE = "aipc_npu_loader.py"
PICKLE_WARNING = (
    "model.pt is a Python pickle (torch.save of the whole quantized transformers module): loading it "
    f"runs code. Open it only through {LOADER_FILE} (shipped here; aipc's own runner is "
    "aipc.pipeline.export.npu.load_npu_artifact), which checks every file against the sha256 recorded here "
    "first, in an environment with the recorded intel-npu-acceleration-library, torch and transformers "
    "versions (transformers 5 cannot load it)."
)
FALLBACK_NOTE = "NPU not available: ran on CPU fallback"
_REEXPORT_FIX = "re-export it (`aipc export npu VARIANT`) and never edit an artifact by hand"


# --------------------------------------------------------------------------- the environment


def env_dir(npu: NPUSection) -> Path:
    """``npu.env_dir`` resolved against the repository (workspaces link code, not venvs)."""
    p = Path(npu.env_dir).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _setup_command(path: Path) -> str:
    default = REPO_ROOT / ".venv-npu"
    return f"bash {SETUP_SCRIPT}" + ("" if path == default else f" {path}")


def check_platform() -> None:
    if sys.platform not in ("linux", "win32"):
        raise EnvironmentProblem(
            f"intel-npu-acceleration-library {LIBRARY_VERSION} runs on Linux and Windows only, not on "
            f"{sys.platform}",
            fix="run the NPU stages (export-npu, smoke-npu) on a Linux or Windows machine, or remove "
                "npu.variants from the params on this one",
        )


def _interpreter(path: Path) -> Path:
    return path / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def env_python(path: Path) -> Path:
    """The NPU environment's interpreter; :class:`EnvironmentProblem` if the environment is missing."""
    check_platform()
    exe = _interpreter(path)
    if not exe.is_file():
        raise EnvironmentProblem(
            f"the NPU environment {path} is missing (params npu.env_dir = {path.name!r}): "
            f"intel-npu-acceleration-library runs only there",
            fix=f"build it: {_setup_command(path)}  (about 2 min the first time; scripts/setup.sh does it too)",
        )
    return exe


def helper_env() -> dict[str, str]:
    """A clean environment for the NPU env's python: nothing of the main venv leaks in."""
    keep = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP",
            "SYSTEMROOT", "OMP_NUM_THREADS", "XDG_CACHE_HOME", "HF_HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        # aipc_npu, and the repository root for pipeline.torchload / pipeline.fsutil (standard library + torch)
        PYTHONPATH=os.pathsep.join([str(HELPER_DIR), str(REPO_ROOT)]),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _error_from(payload: dict[str, Any] | None, what: str, stderr_tail: str, code: int) -> PipelineError:
    """The helper's JSON error (or its crash) as the project's exception."""
    err = (payload or {}).get("error") or {}
    kind, message, fix = err.get("kind", "internal"), err.get("message"), err.get("fix")
    if not message:
        message = f"{what} failed (exit code {code}) without a result" + (f":\n{stderr_tail}" if stderr_tail else "")
    if kind == "integrity":
        return ArtifactIntegrityError(message, fix=fix or _REEXPORT_FIX)
    if kind in ("environment", "version_mismatch"):
        return EnvironmentProblem(message, fix=fix or f"rebuild the NPU environment: bash {SETUP_SCRIPT}")
    if kind == "context_length":
        return ContextTooLong(message, fix=fix)
    if kind == "source":
        return SourceError(message, fix=fix or "check the source checkpoint loads with transformers 4.57")
    return ExportError(message if kind != "internal" or not stderr_tail else f"{message}\n{stderr_tail}",
                       fix=fix or "see the message above")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def helper_worker(params: Params) -> tuple[str, dict[str, str]] | None:
    """(python, environment) of the NPU environment's stage worker, when params has NPU variants and the
    environment is built; None otherwise (``aipc.worker`` prewarms it at the download stage)."""
    if not params.npu.variants:
        return None
    python = _interpreter(env_dir(params.npu))
    return (str(python), helper_env()) if python.is_file() else None


def _start_helper(python: Path, args: list[str], cwd: str, stderr: int, stdin: int | None = None,
                  stdout: int | None = None):
    """``python -m aipc_npu ARGS``: forked from the NPU environment's warm worker under ``dvc repro`` (its
    torch / transformers / library imports done once per repro), else a fresh process. Both give a
    Popen-like object; ``stdin`` / ``stdout`` None means a pipe."""
    from .. import processes

    env = helper_env()
    proc = processes.start("npu", str(python), "aipc_npu", args, env, cwd, stdin, stdout, stderr)
    if proc is not None:
        return proc
    return subprocess.Popen([str(python), "-m", "aipc_npu", *args], env=env, cwd=cwd, stderr=stderr,
                            stdin=subprocess.PIPE if stdin is None else stdin,
                            stdout=subprocess.PIPE if stdout is None else stdout)


def run_helper(python: Path, args: list[str], what: str) -> dict[str, Any]:
    """Run ``python -m aipc_npu ARGS`` once; its JSON result, or the project's exception."""
    with tempfile.TemporaryDirectory(prefix="aipc-npu-log-") as d:
        errlog = Path(d) / "stderr.log"
        with open(errlog, "wb") as err, open(os.devnull, "rb") as devnull:
            proc = _start_helper(python, args, d, err.fileno(), stdin=devnull.fileno())
            with proc.stdout:
                out = proc.stdout.read()
            code = proc.wait()
        tail = _tail(errlog)
        if tail:
            log.debug("aipc_npu %s stderr:\n%s", args[0], tail)
        payload = None
        for line in reversed(out.decode("utf-8", errors="replace").splitlines()):
            try:
                payload = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
        if code != 0 or not payload or not payload.get("ok"):
            raise _error_from(payload, what, tail, code)
        return payload


def env_versions(python: Path) -> dict[str, str]:
    info = run_helper(python, ["info"], "reading the NPU environment's versions")
    vers = info["versions"]
    if LIBRARY not in vers:
        raise EnvironmentProblem(f"the NPU environment {info.get('prefix')} has no {LIBRARY} installed",
                                 fix=f"rebuild it: bash {SETUP_SCRIPT}")
    return vers


# --------------------------------------------------------------------------- export


def export(params: Params, key: str, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Compile variant ``key`` of ``params.npu.variants`` from the checkpoint in ``source_dir``."""
    variant = params.npu.variants[key]
    read_model_config(source_dir)  # a clear SourceError before any process starts
    python = env_python(env_dir(params.npu))
    env_vers = env_versions(python)
    with atomic_dir(out_dir) as tmp:
        log.info("compiling %s -> NPU %s with %s %s (in %s)", source_dir, key, LIBRARY, env_vers[LIBRARY],
                 python.parent.parent)
        result = run_helper(python, ["compile", "--src", str(Path(source_dir).resolve()), "--out", str(tmp.resolve()),
                                     "--dtype", variant.dtype], f"NPU compile of variant {key!r}")
        if not (tmp / MODEL_FILE).is_file():
            raise ExportError(f"NPU compile of {key!r} did not write {MODEL_FILE}", fix="see the log above")
        shutil.copyfile(LOADER_SOURCE, tmp / LOADER_FILE)
        files = file_table(tmp, exclude=(EXPORT_JSON,))
        if files[MODEL_FILE]["sha256"] != result["model_sha256"]:
            raise ExportError(f"{MODEL_FILE} changed between the compile and the hashing",
                              fix="make sure nothing else writes into the artifacts folder, then re-run")
        log.info("compiled in %.1f s (peak RSS %s MiB) on %s", result["seconds"]["total"], result["peak_rss_mib"],
                 result["device"])
        note_device(f"{result['device']} (the NPU library's compile)")
        record = NPUExportRecord(
            backend=BACKEND,
            variant=key,
            params=variant.model_dump(mode="json"),
            library={"name": LIBRARY, "version": result["versions"][LIBRARY]},
            runtime=result["versions"],  # the NPU environment that wrote (and must read) the pickle
            runtime_must_match=list(PICKLE_TIED_TO),
            format="torch-pickle",
            pickle=True,
            warning=PICKLE_WARNING,
            loader=LOADER_FILE,
            model_file=MODEL_FILE,
            compile=NPUCompile(
                call="AutoModelForCausalLM.from_pretrained(src, use_cache=True) + "
                     f"intel_npu_acceleration_library.compile(model, CompilerConfig(dtype={variant.dtype}))",
                quantization="neural-compressor weight-only RTN, symmetric, per channel; lm_head included"
                if variant.dtype in ("int4", "int8") else None,
                lm_head_untied=result["lm_head_untied"],
                linear_types=result["linear_types"],
                packing=result.get("packing"),
            ),
            device=result["device"],
            files={name: FileEntry(**entry) for name, entry in files.items()},
            toolchain=versions(),
            **({"device_fallback": result["device_fallback"]} if result.get("device_fallback") else {}),
        )
        record.write(tmp / EXPORT_JSON)
    return record.dump()


# --------------------------------------------------------------------------- loading


def verify_artifact(folder: Path) -> dict[str, Any]:
    """The export record of ``folder`` after checking every listed file's sha256 (no unpickling).

    Raises :class:`ArtifactIntegrityError` naming the first file that differs or is missing.
    """
    folder = Path(folder)
    record_path = folder / EXPORT_JSON
    try:
        record = read_json(record_path)
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"{record_path}: missing: {folder} is not an NPU export",
                                     fix="export it with `aipc export npu VARIANT`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactIntegrityError(f"{record_path}: not valid JSON ({err})", fix=_REEXPORT_FIX) from None
    if not isinstance(record, dict) or record.get("backend") != BACKEND or record.get("format") != "torch-pickle":
        raise ArtifactIntegrityError(f"{record_path}: not an NPU (torch-pickle) export record",
                                     fix="point at an artifact written by `aipc export npu`")
    files = record.get("files") or {}
    if MODEL_FILE not in files:
        raise ArtifactIntegrityError(f"{record_path}: no sha256 recorded for {MODEL_FILE}", fix=_REEXPORT_FIX)
    for rel, meta in sorted(files.items()):
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ArtifactIntegrityError(f"{record_path}: file {rel!r} is outside the artifact", fix=_REEXPORT_FIX)
        if not path.is_file():
            raise ArtifactIntegrityError(f"{path}: missing (listed in {EXPORT_JSON})", fix=_REEXPORT_FIX)
        got = sha256_file(path)
        if got != meta.get("sha256"):
            raise ArtifactIntegrityError(
                f"{path}: sha256 {got} does not match {meta.get('sha256')} recorded in {EXPORT_JSON}: the artifact "
                "was modified or corrupted after export; refusing to load it (a pickle runs code when loaded)",
                fix=_REEXPORT_FIX,
            )
    return record


def check_runtime(record: dict[str, Any], have: dict[str, str], folder: Path) -> None:
    recorded = record.get("runtime") or {}
    bad = [f"{k} {recorded.get(k)} (NPU environment: {have.get(k, 'not installed')})"
           for k in PICKLE_TIED_TO if recorded.get(k) != have.get(k)]
    if bad:
        raise EnvironmentProblem(
            f"{folder}: the artifact was written with " + ", ".join(bad) + "; its pickle loads only with the same "
            + ", ".join(PICKLE_TIED_TO),
            fix=f"rebuild the NPU environment to the pins of envs/npu/requirements.txt (bash {SETUP_SCRIPT}), or "
                "re-export the artifact with the current environment (aipc export npu VARIANT)",
        )


class NPUArtifact:
    """A verified NPU artifact, loaded in a persistent worker process of the NPU environment.

    Requests go over the worker's stdin/stdout as JSON lines, one at a time. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, folder: Path, python: Path, record: dict[str, Any]):
        self.folder = Path(folder).resolve()
        self.record = record
        self._tmp = Path(tempfile.mkdtemp(prefix="aipc-npu-"))
        self._lock = threading.Lock()
        self._next_id = 0
        expect = self._tmp / "expect-sha256.json"  # exactly the table checked above
        expect.write_text(json.dumps({k: v["sha256"] for k, v in record["files"].items()}), encoding="utf-8")
        self._errlog = open(self._tmp / "worker-stderr.log", "wb")
        self._proc = _start_helper(
            python, ["serve", "--artifact", str(self.folder), "--manifest", str(self.folder / EXPORT_JSON),
                     "--expect-sha256-json", str(expect)], str(self._tmp), self._errlog.fileno())
        try:
            ready = self._read("loading the NPU artifact")
        except BaseException:
            self.close()
            raise
        self.info: dict[str, Any] = ready["info"]
        self.device: str = self.info["device"]
        self.device_fallback: bool = not self.info.get("npu_available", False)

    def _read(self, what: str) -> dict[str, Any]:
        assert self._proc.stdout is not None
        while True:
            line = self._proc.stdout.readline()
            if not line:
                code = self._proc.wait()
                self._errlog.flush()
                raise _error_from(None, f"{what} (NPU worker)", _tail(self._tmp / "worker-stderr.log"), code)
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not msg.get("ok"):
                raise _error_from(msg, what, _tail(self._tmp / "worker-stderr.log"), self._proc.poll() or 0)
            return msg

    def request(self, op: str, **kwargs: Any) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            raise EnvironmentProblem("the NPU worker is not running", fix="open the artifact again")
        with self._lock:
            self._next_id += 1
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps({"id": self._next_id, "op": op, **kwargs}) + "\n").encode("utf-8"))
            self._proc.stdin.flush()
            return self._read(f"NPU {op}")["result"]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.request("chat_prompt", messages=messages)

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, Any]:
        """Greedy generation; the chat template is applied once (in the worker)."""
        return self.request("generate", messages=messages, max_new_tokens=max_new_tokens)

    def logits(self, ids: list[int]):
        """Teacher-forcing logits, float32 numpy array [len(ids), vocab]."""
        import numpy as np

        out = self._tmp / f"logits-{uuid.uuid4().hex}.npy"
        res = self.request("logits", ids=[int(i) for i in ids], out=str(out))
        try:
            return np.load(res["path"]).astype(np.float32, copy=False)
        finally:
            out.unlink(missing_ok=True)

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(b'{"op": "close"}\n')
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if getattr(self, "_errlog", None) is not None:
            self._errlog.close()
        if getattr(self, "_tmp", None) is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "NPUArtifact":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def load_npu_artifact(folder: str | os.PathLike, npu: NPUSection | None = None,
                      env: str | os.PathLike | None = None) -> NPUArtifact:
    """Open the NPU artifact in ``folder``: the one supported way to load its pickle.

    1. the platform is Linux or Windows and the NPU environment exists (``env``, else
       ``npu.env_dir``, else ``<repo>/.venv-npu``) - :class:`EnvironmentProblem` otherwise;
    2. every file listed in ``aipc_export.json`` has its recorded sha256 -
       :class:`ArtifactIntegrityError` otherwise, before anything is unpickled;
    3. the environment's intel-npu-acceleration-library / torch / transformers are the recorded
       ones - :class:`EnvironmentProblem` otherwise;
    4. a worker in the NPU environment checks the sha256 again on the file object it then
       ``torch.load(..., weights_only=False)``-s, and stays up for requests.

    No NPU device is not an error: the library runs on OpenVINO's CPU plugin and
    ``NPUArtifact.device_fallback`` is True.
    """
    folder = Path(folder)
    path = Path(env) if env is not None else env_dir(npu) if npu is not None else REPO_ROOT / ".venv-npu"
    if not path.is_absolute():
        path = REPO_ROOT / path
    python = env_python(path)
    record = verify_artifact(folder)
    check_runtime(record, env_versions(python), folder)
    return NPUArtifact(folder, python, record)
