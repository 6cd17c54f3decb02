"""A bundle bound to its build: the artifact's files are the bytes DVC recorded for the stage that made them.

At bundle time, when the workspace's ``dvc.lock`` records the artifact folder as an output of a stage,
every file of the bundle that comes from the artifact is checked against that record (DVC keeps each
file's md5 in the folder's ``.dir`` listing in its cache), and the manifest records the stage, the
folder's DVC hash and the commit of the code that built it. ``aipc publish`` checks it again, so a
bundle whose files were replaced after it was built is refused naming the file and the record, even
if someone rewrote its manifest to match.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from ..errors import PublishError
from ..fsutil import file_digest

LOCK = "dvc.lock"


def md5_file(path: Path) -> str:
    """The md5 DVC records for a file (its plain content hash)."""
    return file_digest(path, lambda: hashlib.md5(usedforsecurity=False))


def dvc_record(workspace: Path, artifact_dir: Path) -> dict[str, Any] | None:
    """``{stage, out, md5, files: {relpath: md5}}`` of the dvc.lock output that is ``artifact_dir``, or None
    when the workspace has no dvc.lock or it does not record that folder (a bundle built outside DVC)."""
    import yaml

    workspace = Path(workspace).resolve()
    lock = workspace / LOCK
    if not lock.is_file():
        return None
    try:
        rel = Path(artifact_dir).resolve().relative_to(workspace).as_posix()
    except ValueError:
        return None
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
    for name, st in stages.items():
        for out in st.get("outs") or []:
            if out.get("path") == rel and str(out.get("md5", "")).endswith(".dir"):
                return {"stage": name, "out": rel, "md5": out["md5"], "files": _dir_listing(workspace, out["md5"])}
    return None


def _dir_listing(workspace: Path, md5: str) -> dict[str, str]:
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        path = Path(repo.cache.local.oid_to_path(md5))
    try:
        return {e["relpath"]: e["md5"] for e in json.loads(path.read_text())}
    except FileNotFoundError:
        raise PublishError(f"{path}: DVC's listing of {md5} is not in the cache, so the artifact's files cannot be "
                           "checked against dvc.lock", fix="run `dvc checkout` or `dvc repro` in the workspace") from None


def check(folder: Path, record: dict[str, Any], where: str, fix: str) -> None:
    """Every file of ``folder`` that the DVC record lists has the recorded md5; PublishError naming each
    that does not."""
    bad = [rel for rel, md5 in sorted(record["files"].items())
           if (folder / rel).is_file() and md5_file(folder / rel) != md5]
    if bad:
        raise PublishError(f"{where}: {', '.join(bad)} differ(s) from what dvc.lock records for stage "
                           f"{record['stage']} ({record['out']}, {record['md5']})", fix=fix)


def code_commit(repo_root: Path) -> str | None:
    """The checkout's commit (with ``+dirty`` if tracked files changed), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True,
                             timeout=30)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root,
                               capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty else "")


def manifest_entry(record: dict[str, Any] | None, repo_root: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"code_commit": code_commit(repo_root)}
    if record is not None:
        entry.update(dvc_stage=record["stage"], dvc_out=record["out"], dvc_md5=record["md5"])
    return entry
