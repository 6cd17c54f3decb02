"""Run workspaces: a folder where ``dvc repro`` runs the repo's real dvc.yaml on other params.

The release ``params.yaml`` stays untouched: a workspace holds its own params.yaml (the release
params with a profile such as ``configs/embedded.yaml`` merged on top, validated), its own copy of the
repo's ``dvc.yaml`` (so an edit there never writes into the checkout's tracked file), links to the
repo's code and configs, and its own DVC state and ``artifacts/``. A workspace is a git repository of
its own (the first commit holds what init wrote), so DVC's git-based commands work in it:
``dvc exp run -S``, ``dvc exp show``, ``dvc params diff``, ``dvc metrics diff``, ``dvc plots diff``.
The offline demo (README command 1) and the end-to-end tests use one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import yaml

from .config import USER_TEXTS_DIR, deep_merge, parse_params
from .errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# How DVC puts outputs into its cache: a hard link where it can (no copy of GBs of weights, no second
# copy on disk; DVC makes the output read-only, `dvc unprotect` makes it writable again), else a copy.
# "hardlink" must come first: only then does DVC's commit link (reflink, else hardlink) instead of
# copying. The repo's .dvc/config says the same (a test checks). Every writer here replaces files
# (temp dir + rename) and never writes into an output in place.
DVC_CACHE_TYPE = "hardlink,copy"
# Copied, not linked: DVC's git mode refuses a symlinked dvc.yaml, and an edit in the workspace must not
# change the checkout's file. Re-running init brings the checkout's newer version, unless the workspace's
# copy has uncommitted edits (then it stops and says so).
COPIES = ("dvc.yaml", ".dvcignore")
# Linked: the code every stage runs and depends on (aipc: the entry point and the warm worker; edits
# there are edits of the project), envs/npu (the NPU stages' code and pins), configs (sweep grids),
# requirements (the main toolchain's lock, a dep of every stage).
LINKS = ("aipc", "pipeline", "stages", "validation", "envs", "configs", "requirements")
# The links are left out of git (the workspace's .gitignore): git would record a path into this machine's
# checkout, and DVC reads code only from the working tree. Experiments therefore run in the workspace
# (`dvc exp run`), not in DVC's temporary copies (--temp, --queue).
# artifacts/ as in the checkout: DVC's cache holds the outputs, and the one it does not cache (the
# intermediate IR, artifacts/openvino-base: GBs for Phi-3) must not end up in git either.
GITIGNORE = (*LINKS, "artifacts")
GITIGNORE_HEAD = "# links into the checkout and the artifacts (aipc workspace init); DVC adds its outputs below\n"


def merged_params(repo_root: Path, profile: Path | None) -> dict:
    base = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    if profile is None:
        return base
    try:
        override = yaml.safe_load(Path(profile).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"profile {profile}: file not found", fix="see configs/ for the profiles") from None
    merged = deep_merge(base, override)
    parse_params(merged, origin=f"params.yaml + {profile}")
    return merged


def _git(dest: Path):
    """The workspace's git repository (scmrepo, what DVC itself uses), created if missing."""
    from scmrepo.git import Git

    return Git(str(dest)) if (dest / ".git").exists() else Git.init(str(dest))


def _copy_in(scm, repo_root: Path, dest: Path, name: str) -> None:
    """Copy the checkout's ``name`` into the workspace; refuse to drop uncommitted edits of it."""
    src, dst = repo_root / name, dest / name
    new = src.read_bytes()
    if dst.is_symlink():  # a workspace from before workspaces were git repositories
        dst.unlink()
    elif dst.exists():
        old = dst.read_bytes()
        if old == new:
            return
        try:
            head = scm.get_rev()
        except Exception:  # noqa: BLE001 - scmrepo's error for a repository with no commit: init made it
            head = None
        try:
            committed = scm.get_fs(head).read_bytes(name) if head else old
        except FileNotFoundError:
            committed = None
        if committed != old:
            raise ConfigError(f"{dst}: changed in the workspace and not committed; `aipc workspace init` "
                              f"would replace it with the checkout's {name}",
                              fix=f"commit it (cd {dest} && git commit -am ...) to keep it in the workspace's "
                                  f"history, or undo it (git checkout -- {name}), then run init again")
    tmp = dst.with_name(f".{name}.tmp")
    tmp.write_bytes(new)
    tmp.replace(dst)


def create(dest: Path, profile: Path | None = None, repo_root: Path = REPO_ROOT) -> Path:
    """Create or refresh the workspace at ``dest``; idempotent (a second call changes nothing)."""
    dest = Path(dest)
    data = merged_params(repo_root, profile)
    dest.mkdir(parents=True, exist_ok=True)
    scm = _git(dest)
    try:
        text = "# generated by `aipc workspace init` from the release params.yaml" + (
            f" + {Path(profile).name}" if profile else "") + "; edit the profile, not this file (or try a " \
            "value with `dvc exp run -S key=value`)\n"
        text += yaml.safe_dump(data, sort_keys=False)
        target = dest / "params.yaml"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        for name in COPIES:
            _copy_in(scm, repo_root, dest, name)
        texts = dest / USER_TEXTS_DIR  # the workspace's own texts (a dep of reference and calibration)
        if not texts.is_dir():
            texts.mkdir()
            shutil.copyfile(repo_root / USER_TEXTS_DIR / "README.md", texts / "README.md")
        for name in LINKS:
            link = dest / name
            rel = os.path.relpath(repo_root / name, dest)
            if link.is_symlink() and os.readlink(link) == rel:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(rel)
        from dvc.repo import Repo

        repo = Repo(str(dest)) if (dest / ".dvc").is_dir() else Repo.init(str(dest))
        try:
            conf = repo.config.read("repo")
            want = {("core", "analytics"): False,  # never phone home from a pipeline run
                    ("cache", "type"): DVC_CACHE_TYPE}  # an existing workspace: new outputs are linked
            if any(conf.get(sec, {}).get(key) != value for (sec, key), value in want.items()) \
                    or conf.get("core", {}).get("no_scm"):
                with repo.config.edit() as conf:
                    for (sec, key), value in want.items():
                        conf[sec][key] = value
                    conf["core"].pop("no_scm", None)  # a workspace from before: now a git repository
        finally:
            repo.close()
        _write_gitignore(dest)
        commit(dest, "aipc workspace init" + (f" --profile {Path(profile).name}" if profile else ""), scm=scm)
    finally:
        scm.close()
    log.info("workspace ready: %s", dest)
    return dest


def _write_gitignore(dest: Path) -> None:
    gi = dest / ".gitignore"
    text = gi.read_text(encoding="utf-8") if gi.exists() else ""
    lines = set(text.splitlines())
    missing = [f"/{name}" for name in GITIGNORE if f"/{name}" not in lines]
    if missing:
        head = "" if any(line.startswith("# links into the checkout") for line in lines) else GITIGNORE_HEAD
        gi.write_text(head + "\n".join(missing) + "\n" + text, encoding="utf-8")


def commit(dest: Path, message: str, scm=None) -> str | None:
    """Commit everything in the workspace that git does not ignore (params, dvc.yaml, dvc.lock, metrics,
    DVC's config and .gitignore files; not the artifacts DVC caches nor the links into the checkout), if
    anything changed; returns the new commit or None. Through scmrepo (DVC's own git layer), so it works
    where git has no user configured."""
    dest = Path(dest)
    own = scm is None
    scm = _git(dest) if own else scm
    try:
        entries = [str(p) for p in sorted(dest.iterdir()) if p.name != ".git" and not p.is_symlink()]
        scm.add(entries)
        if not _has_changes(scm):
            return None
        scm.commit(message)
        return scm.get_rev()
    finally:
        if own:
            scm.close()


def _has_changes(scm) -> bool:
    """Whether the index holds anything the last commit does not (always, before the first commit)."""
    try:
        scm.get_rev()
    except Exception:  # noqa: BLE001 - scmrepo raises its own error on an empty repository
        return True
    staged, _, _ = scm.status()
    return any(staged.values())
