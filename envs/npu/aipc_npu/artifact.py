"""Artifact checks that run before anything is unpickled (standard library only)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from . import MANIFEST, MODEL_FILE, PICKLE_TIED_TO, VERSION_PACKAGES
from .errors import NPUError

_CHUNK = 1 << 20
REEXPORT_FIX = "re-export it (`aipc export npu VARIANT`) and never edit an artifact by hand"


def versions() -> dict[str, str]:
    """Versions of this environment, read from package metadata (imports nothing heavy)."""
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def check_platform() -> None:
    if sys.platform not in ("linux", "win32"):
        raise NPUError("environment", f"intel-npu-acceleration-library 1.4.0 runs on Linux and Windows only, "
                       f"not on {sys.platform}", fix="run the NPU stages on a Linux or Windows machine")


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise NPUError("integrity", f"{path}: missing", fix=REEXPORT_FIX) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NPUError("integrity", f"{path}: not valid JSON ({err})", fix=REEXPORT_FIX) from None


def expected_hashes(data: Any, origin: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a manifest (``files`` table) or a plain mapping."""
    table = data.get("files", data) if isinstance(data, dict) else None
    if not isinstance(table, dict) or not table:
        raise NPUError("integrity", f"{origin}: no sha256 table of the artifact's files", fix=REEXPORT_FIX)
    out = {}
    for rel, v in table.items():
        sha = v.get("sha256") if isinstance(v, dict) else v
        if not isinstance(sha, str) or len(sha) != 64:
            raise NPUError("integrity", f"{origin}: no valid sha256 for {rel!r}", fix=REEXPORT_FIX)
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise NPUError("integrity", f"{origin}: file {rel!r} is outside the artifact", fix=REEXPORT_FIX)
        out[rel] = sha
    if MODEL_FILE not in out:
        raise NPUError("integrity", f"{origin}: {MODEL_FILE} has no recorded sha256", fix=REEXPORT_FIX)
    return out


def _sha256_stream(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _mismatch(path: Path, want: str, got: str) -> NPUError:
    return NPUError("integrity", f"{path}: sha256 {got} does not match the recorded {want}: the artifact was "
                    "modified or corrupted after export; refusing to load it (a pickle runs code when loaded)",
                    fix=REEXPORT_FIX)


def verify_files(artifact: Path, table: dict[str, str], skip: tuple[str, ...] = ()) -> None:
    for rel, want in sorted(table.items()):
        if rel in skip:
            continue
        path = artifact / rel
        if not path.is_file():
            raise NPUError("integrity", f"{path}: missing (listed in the artifact's sha256 table)", fix=REEXPORT_FIX)
        got = sha256_file(path)
        if got != want:
            raise _mismatch(path, want, got)


def open_verified(path: Path, want: str) -> IO[bytes]:
    """Open ``path``, hash it through that same file object and return it rewound: what is then
    unpickled is exactly what was hashed (no window to swap the file by name)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise NPUError("integrity", f"{path}: missing", fix=REEXPORT_FIX) from None
    try:
        got = _sha256_stream(f)
        if got != want:
            raise _mismatch(path, want, got)
        f.seek(0)
        return f
    except BaseException:
        f.close()
        raise


def check_versions(manifest: dict[str, Any], origin: str) -> None:
    """The pickle loads only with the versions it was written with."""
    recorded = manifest.get("runtime") or {}
    have = versions()
    bad = [f"{k} {recorded.get(k)} (this environment: {have.get(k, 'not installed')})"
           for k in PICKLE_TIED_TO if recorded.get(k) != have.get(k)]
    if bad:
        raise NPUError(
            "version_mismatch",
            f"{origin}: the artifact was written with " + ", ".join(bad) + f"; its pickle loads only with the "
            "same " + ", ".join(PICKLE_TIED_TO),
            fix="rebuild the NPU environment to the pins of envs/npu/requirements.txt (bash envs/npu/setup.sh), "
                "or re-export the artifact with this environment (aipc export npu VARIANT)",
        )


def manifest_path(artifact: Path, given: str | None) -> Path:
    return Path(given) if given else artifact / MANIFEST


def chdir_private() -> Path:
    """Run in a private temp dir: the library writes ./cache (OpenVINO kernel blobs) and
    neural-compressor ./nc_workspace relative to the CWD; neither may land in the repo."""
    import atexit
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="aipc-npu-"))
    os.chdir(d)
    atexit.register(shutil.rmtree, d, True)
    return d
