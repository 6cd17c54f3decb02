"""Publishing bundles to the Hugging Face Hub (or any server at ``HF_ENDPOINT``), and verifying them.

``publish``:

1. checks every bundle first, before any network call: its files match ``manifest.json`` (sha256 +
   size, nothing missing or extra), it has a passing smoke verdict and no failed recorded verdict,
   its license is known, and its repo id is the one params.yaml gives now;
2. plans each repo: the remote tree (LFS sha256 / git blob sha1 per file) against the bundle's files
   → add / change / unchanged / delete; ``--dry-run`` prints this and stops;
3. creates the repo if needed, uploads only the added and changed files (large ones one at a time,
   with a progress line; huggingface_hub's LFS batch skips objects the server already has, so an
   interrupted publish run again sends only what is missing), and makes ONE commit whose message
   names the source commit, with ``parent_commit`` set so a concurrent change is never overwritten;
   a commit answered with a 5xx or a dropped connection is retried a few times (the client retries
   preupload / LFS itself), checking first whether the failed attempt landed;
4. tags the commit with the version (an existing tag is never moved) and prints the URLs.

The token comes from ``HF_TOKEN`` or the client's login (``hf auth login``); it is never printed or
logged, and is scrubbed from any error text that reaches the user.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PublishError
from .fsutil import sha256_file
from .package import bundle_dir, check_variant
from .package import manifest as mf
from .package import signing
from .package.card import human

log = logging.getLogger(__name__)

LARGE_FILE = 1 << 20  # files above this are uploaded one at a time, each with a progress line
COMMIT_ATTEMPTS = 3
COMMIT_WAIT_S = 1.0
_CHUNK = 1 << 20

Echo = Callable[[str], None]


# --------------------------------------------------------------------------- checks (no network)


def _rebuild_fix(m: dict[str, Any]) -> str:
    return (f"rebuild it: `aipc bundle {m.get('backend', 'BACKEND')} {m.get('variant', 'VARIANT')}` "
            "(or `dvc repro`); never edit a bundle by hand")


def check_bundle(folder: Path, params=None) -> dict[str, Any]:
    """The manifest of a bundle that may be published; PublishError naming the file / gate otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder}: no such bundle", fix="build it with `aipc bundle BACKEND VARIANT` (or `dvc repro`)")
    m = mf.read_manifest(folder)
    mf.check_files(folder, m, where=f"bundle {folder}", allow_extra=(signing.SIGNATURE,), fix=_rebuild_fix(m))
    check_signature(folder, m, params)
    check_binding(folder, m)
    problems = mf.failed_verdicts(m)
    if problems:
        key = f"{m['backend']}-{m['variant']}"
        raise PublishError(
            f"bundle {folder} is refused: " + "; ".join(problems),
            fix=f"fix the artifact and re-run `dvc repro` (details: metrics/smoke/{key}.json, metrics/validate/{key}.json); "
                f"a wrong threshold is changed in params.yaml validation.gates.variants.{key}, never by publishing anyway")
    if not m["source"].get("license") or m["source"]["license"] == "unknown":
        raise PublishError(f"bundle {folder} is refused: the source model's license is unknown "
                           "(no provenance, no recognizable LICENSE file)",
                           fix="set bundle.license in params.yaml to the Hub license id (e.g. mit) and rebuild")
    if params is not None:
        want = params.publish.repo_id(params.model.name, m["backend"], m["variant"])
        if want != m["repo_id"]:
            raise PublishError(f"bundle {folder} was built for repo {m['repo_id']}, but params.yaml now gives {want}",
                               fix=_rebuild_fix(m))
    return m


def check_signature(folder: Path, m: dict[str, Any], params=None) -> str:
    """model.sig verifies: against bundle.public_key of params.yaml when it names the release key (a bundle
    signed with any other key is refused), else against the key the bundle ships (its integrity); returns
    the fingerprint it verified with."""
    release = getattr(getattr(params, "bundle", None), "public_key", None)
    key = Path(release) if release else folder / signing.PUBLIC_KEY
    if release and not key.is_file():
        raise PublishError(f"params.yaml: bundle.public_key: {release}: no such file",
                           fix="commit the release's public key there (PEM), or remove the setting")
    return signing.verify(folder, key, where=f"bundle {folder}", fix=_rebuild_fix(m) + (
        f" with the release key (AIPC_SIGNING_KEY, the private half of {release})" if release else ""))


def check_binding(folder: Path, m: dict[str, Any], workspace: Path = Path(".")) -> None:
    """A bundle built under DVC still holds the bytes dvc.lock records for its artifact (when the workspace
    it is published from has that dvc.lock)."""
    from .package import binding

    build = m.get("build") or {}
    if not build.get("dvc_stage"):
        return
    record = binding.dvc_record(workspace, Path(workspace) / build["dvc_out"])
    if record is None:
        return  # published from elsewhere: the signature is the check
    if record["md5"] != build["dvc_md5"]:
        raise PublishError(f"bundle {folder} was built from {build['dvc_out']} as DVC recorded it then "
                           f"({build['dvc_md5']}); dvc.lock now records {record['md5']} (stage {record['stage']})",
                           fix=_rebuild_fix(m))
    binding.check(folder, record, where=f"bundle {folder}", fix=_rebuild_fix(m))


def bundles_for_all(params, workspace: Path = Path(".")) -> list[Path]:
    """The bundle of every artifact params.yaml defines (all must exist)."""
    folders = [Path(workspace) / bundle_dir(b, v) for b, v in params.artifact_ids()]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise PublishError(f"--all: {len(missing)} bundle(s) missing: {', '.join(missing)}",
                           fix="run `dvc repro` (it builds every bundle), or name the bundles to publish")
    return folders


# --------------------------------------------------------------------------- the Hub


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _scrub(text: str) -> str:
    try:
        token = _token()
    except Exception:  # noqa: BLE001 - scrubbing must never fail
        token = None
    return text.replace(token, "***") if token else text


def _status(err: BaseException) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


def _chain(err: BaseException) -> list[BaseException]:
    out = [err]
    while out[-1].__cause__ is not None and out[-1].__cause__ not in out and len(out) < 20:
        out.append(out[-1].__cause__)
    return out


def _transient(err: BaseException) -> bool:
    """A 5xx or a network failure anywhere in the exception chain (the client wraps upload errors)."""
    import httpx

    for e in _chain(err):
        status = _status(e)
        if (status is not None and status >= 500) or isinstance(e, (httpx.TransportError, ConnectionError)):
            return True
    return False


def _network_cause(err: BaseException) -> BaseException:
    import httpx

    return next((e for e in _chain(err) if isinstance(e, (httpx.TransportError, ConnectionError))
                 or (_status(e) or 0) >= 500), err)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return _scrub(f"{type(err).__name__}: {text[0] if text else ''}")[:300]


def hub_error(err: BaseException, repo_id: str, doing: str) -> PublishError:
    """One clear PublishError for a failed Hub call (the token never appears in it)."""
    from huggingface_hub.errors import LocalTokenNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    status = _status(err)
    if any(type(e).__name__ == "OfflineModeIsEnabled" for e in _chain(err)):
        return PublishError(f"{doing} {repo_id}: HF_HUB_OFFLINE is set, so the Hub client makes no requests",
                            fix="unset HF_HUB_OFFLINE (scripts/test.sh sets it for the offline test suite)")
    if isinstance(err, LocalTokenNotFoundError):
        return PublishError(f"{doing} {repo_id}: no Hub token",
                            fix="export HF_TOKEN=<a write token> (CI: the HF_TOKEN secret) or run `hf auth login`")
    if status == 401 and not isinstance(err, RepositoryNotFoundError):
        return PublishError(f"{doing} {repo_id}: the Hub at {endpoint} refused the token (HTTP 401)",
                            fix="set HF_TOKEN to a valid token with write access (or `hf auth login`)")
    if status == 403:
        return PublishError(f"{doing} {repo_id}: the token may not write to {repo_id.split('/')[0]} (HTTP 403)",
                            fix="use a token with write access to that namespace, or change publish.org in params.yaml")
    if isinstance(err, RevisionNotFoundError):
        return PublishError(f"{doing} {repo_id}: no such revision on {endpoint}",
                            fix="check the --revision (a branch, tag or commit of the repo)")
    if isinstance(err, RepositoryNotFoundError):
        return PublishError(f"{doing} {repo_id}: no such repo on {endpoint} (or the token may not read it)",
                            fix="check the repo id and HF_TOKEN")
    if _transient(err):
        return PublishError(f"{doing} {repo_id}: the Hub did not answer properly ({_short(_network_cause(err))}), "
                            "after retries",
                            fix="run the same command again: it resumes, and files already on the Hub are not sent again")
    return PublishError(f"{doing} {repo_id} failed: {_short(err)}",
                        fix="see the message above; run with -v for the client's log")


def _damaged_storage(repo_id: str, commit: str, folder: Path, m: dict[str, Any]) -> list[str]:
    """Files whose downloaded bytes differ from what the commit itself records (LFS sha256, or git blob id),
    while the commit records the bundle's own sha256: the server's storage, not the history, is wrong."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        remote = {f.path: f for f in HfApi().list_repo_tree(repo_id, revision=commit, recursive=True)
                  if isinstance(f, RepoFile)}
    except Exception:  # noqa: BLE001 - the plain mismatch message is still true
        return []
    damaged = []
    for path, meta in sorted(m["files"].items()):
        local, r = folder / path, remote.get(path)
        if r is None or not local.is_file():
            continue
        if r.lfs is not None:
            if r.lfs.sha256 == meta["sha256"] and sha256_file(local) != meta["sha256"]:
                damaged.append(path)
        elif r.blob_id != git_blob_sha1(local):
            damaged.append(path)  # the commit's blob is not what was served
    return damaged


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the Hub reports as the oid of a regular, non-LFS file)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Change:
    path: str
    action: str  # add | change | unchanged | delete
    size: int


@dataclass
class Plan:
    folder: Path
    manifest: dict[str, Any]
    repo_id: str
    exists: bool
    remote_private: bool | None
    head: str | None
    changes: list[Change]
    tag: str | None
    tag_target: str | None

    def of(self, *actions: str) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def upload_bytes(self) -> int:
        return sum(c.size for c in self.of("add", "change"))

    @property
    def dirty(self) -> bool:
        return bool(self.of("add", "change", "delete"))


def _local_files(folder: Path, m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = dict(m["files"])
    for name in (mf.MANIFEST, signing.SIGNATURE):  # the two files the manifest cannot list
        if (folder / name).is_file():
            files[name] = {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
    return files


def diff_remote(folder: Path, local: dict[str, dict[str, Any]], remote: dict[str, Any]) -> list[Change]:
    """Compare the bundle with the remote tree: LFS files by sha256, regular files by git blob sha1."""
    changes = []
    for path, meta in sorted(local.items()):
        r = remote.get(path)
        if r is None:
            action = "add"
        elif r.lfs is not None:
            action = "unchanged" if r.lfs.sha256 == meta["sha256"] and r.size == meta["size"] else "change"
        else:
            same = r.size == meta["size"] and r.blob_id == git_blob_sha1(folder / path)
            action = "unchanged" if same else "change"
        changes.append(Change(path, action, meta["size"]))
    for path in sorted(set(remote) - set(local) - set(mf.HUB_FILES)):
        changes.append(Change(path, "delete", remote[path].size))
    return changes


def make_plan(api, folder: Path, m: dict[str, Any], tag: str | None) -> Plan:
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    repo_id = m["repo_id"]
    local = _local_files(folder, m)
    try:
        info = api.repo_info(repo_id)
    except RepositoryNotFoundError as err:
        if _status(err) == 401 and "Invalid credentials" in str(err):
            raise hub_error(err, repo_id, "reading") from None
        changes = [Change(p, "add", meta["size"]) for p, meta in sorted(local.items())]
        return Plan(folder, m, repo_id, False, None, None, changes, tag, None)
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, repo_id, "reading") from None
    try:
        remote = {f.path: f for f in api.list_repo_tree(repo_id, revision=info.sha, recursive=True)
                  if isinstance(f, RepoFile)}
        tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags} if tag else {}
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, repo_id, "reading") from None
    return Plan(folder, m, repo_id, True, bool(getattr(info, "private", False)), info.sha,
                diff_remote(folder, local, remote), tag, tags.get(tag) if tag else None)


def describe(plan: Plan, private: bool) -> list[str]:
    m = plan.manifest
    state = ("existing repo, " + ("private" if plan.remote_private else "public")) if plan.exists else \
        ("new repo, " + ("private" if private else "public"))
    lines = [f"{m['backend']}-{m['variant']} -> {plan.repo_id} ({state})",
             f"  source: {m['source']['ref']}"]
    width = max((len(c.path) for c in plan.changes), default=10)
    for c in plan.changes:
        if c.action != "unchanged":
            lines.append(f"  {c.action:<9} {c.path:<{width}}  {human(c.size)}")
    same = plan.of("unchanged")
    if same:
        lines.append(f"  unchanged {len(same)} file(s), {human(sum(c.size for c in same))}")
    up = plan.of("add", "change")
    lines.append(f"  to upload: {len(up)} file(s), {human(plan.upload_bytes)}; to delete: {len(plan.of('delete'))}; "
                 f"tag: {plan.tag or '(none)'}")
    return lines


def _check_tag(plan: Plan) -> None:
    if plan.tag and plan.tag_target and (plan.dirty or plan.tag_target != plan.head):
        raise PublishError(
            f"{plan.repo_id}: tag {plan.tag} already names commit {plan.tag_target[:12]}, and this publish "
            + ("changes the repo" if plan.dirty else f"would tag the head {str(plan.head)[:12]}")
            + "; a published version tag is never moved",
            fix="pass a new version with --tag (e.g. the next release), or set publish.tag in params.yaml")


def commit_message(m: dict[str, Any]) -> tuple[str, str]:
    src = m["source"]
    title = f"Publish {m['model']} {m['backend']}/{m['variant']} from {src['ref']}"
    val = m.get("validation") or {}
    verdicts = ", ".join(f"{k} {'passed' if v.get('passed') else 'FAILED'}" for k, v in sorted(val.items()))
    body = (f"Bundle {m['name']} built by aipc {m.get('toolchain', {}).get('aipc', '?')} from {src['ref']}.\n"
            f"Validation: {verdicts or 'none recorded'}.\n"
            f"Every file's sha256 is in manifest.json; check with `aipc verify {m['repo_id']}`.")
    return title, body


def _landed(api, plan: Plan) -> str | None:
    """After a failed commit attempt: the new head if that attempt landed after all, else None."""
    info = api.repo_info(plan.repo_id)
    if info.sha == plan.head:
        return None
    from huggingface_hub.hf_api import RepoFile

    remote = {f.path: f for f in api.list_repo_tree(plan.repo_id, revision=info.sha, recursive=True)
              if isinstance(f, RepoFile)}
    if not [c for c in diff_remote(plan.folder, _local_files(plan.folder, plan.manifest), remote)
            if c.action != "unchanged"]:
        return info.sha
    raise PublishError(f"{plan.repo_id} changed while publishing (head {plan.head} -> {info.sha})",
                       fix="run `aipc publish` again: it plans against the new head")


def _commit(api, plan: Plan, operations: list) -> str:
    title, body = commit_message(plan.manifest)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            info = api.create_commit(plan.repo_id, operations=operations, commit_message=title,
                                     commit_description=body, parent_commit=plan.head)
            return info.oid
        except Exception as err:  # noqa: BLE001
            if _status(err) == 412:  # the branch moved: a previous attempt landed, or someone else committed
                landed = _landed(api, plan)
                if landed:
                    return landed
                raise PublishError(f"{plan.repo_id}: the Hub refused the commit because the branch moved (HTTP 412)",
                                   fix="run `aipc publish` again: it plans against the new head") from None
            if not _transient(err) or attempt == COMMIT_ATTEMPTS:
                raise
            wait = COMMIT_WAIT_S * 2 ** (attempt - 1)
            log.warning("commit to %s failed (%s); retrying in %.0f s [%d/%d]", plan.repo_id, _short(err), wait,
                        attempt, COMMIT_ATTEMPTS - 1)
            time.sleep(wait)
            landed = _landed(api, plan)
            if landed:
                log.info("the failed commit attempt had landed: %s", landed)
                return landed
    raise AssertionError("unreachable")  # pragma: no cover


def _upload(api, plan: Plan, echo: Echo) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    adds = [(c, CommitOperationAdd(path_in_repo=c.path, path_or_fileobj=str(plan.folder / c.path)))
            for c in plan.of("add", "change")]
    small = [op for c, op in adds if c.size <= LARGE_FILE]
    large = [(c, op) for c, op in adds if c.size > LARGE_FILE]
    doing = "uploading to"
    try:
        for i, (c, op) in enumerate(large, 1):  # one at a time: a progress line each, and a failure names its file
            doing = f"uploading {c.path} to"
            echo(f"  uploading {c.path} ({human(c.size)}) [{i}/{len(large)}]")
            api.preupload_lfs_files(plan.repo_id, additions=[op])
        doing = "uploading to"
        if small:
            api.preupload_lfs_files(plan.repo_id, additions=small)
        doing = "committing to"
        ops = [op for _, op in adds] + [CommitOperationDelete(path_in_repo=c.path) for c in plan.of("delete")]
        return _commit(api, plan, ops)
    except PublishError:
        raise
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, plan.repo_id, doing) from None


def publish(params, folders: list[Path], *, dry_run: bool = False, private: bool | None = None,
            tag: str | None = None, echo: Echo = print) -> list[dict[str, Any]]:
    """Publish each bundle folder (all are checked before anything is sent). Returns one result per bundle."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise PublishError("no bundles to publish", fix="name bundle folders (artifacts/bundles/...) or pass --all")
    manifests = [check_bundle(f, params) for f in folders]
    for m in manifests:
        check_variant(params, m["backend"], m["variant"])
    private = params.publish.private if private is None else private
    tag = tag or params.publish.tag
    if not dry_run and not _token():
        raise PublishError("no Hub token: publishing needs a token with write access",
                           fix="export HF_TOKEN=<a write token> (CI: the HF_TOKEN secret) or run `hf auth login`")
    from huggingface_hub import HfApi

    api = HfApi()
    plans = []
    for folder, m in zip(folders, manifests):  # plan (and print) every bundle before anything is written
        plans.append(make_plan(api, folder, m, tag))
        for line in describe(plans[-1], private):
            echo(line)
    for plan in plans:
        _check_tag(plan)
    results = []
    for plan in plans:
        folder, m = plan.folder, plan.manifest
        url = f"{api.endpoint}/{plan.repo_id}"
        result = {"bundle": str(folder), "repo_id": plan.repo_id, "url": url, "dry_run": dry_run,
                  "uploaded_files": len(plan.of("add", "change")), "uploaded_bytes": plan.upload_bytes,
                  "deleted_files": len(plan.of("delete")), "commit": plan.head, "tag": tag}
        if dry_run:
            results.append(result)
            continue
        echo(f"publishing {m['backend']}-{m['variant']} -> {plan.repo_id}")
        if not plan.exists:
            try:
                api.create_repo(plan.repo_id, private=private, exist_ok=True)
            except Exception as err:  # noqa: BLE001
                raise hub_error(err, plan.repo_id, "creating") from None
            plan = make_plan(api, folder, m, tag)  # the new repo's initial commit is the parent
        elif private and not plan.remote_private:
            echo(f"  note: {plan.repo_id} exists and is public; --private only applies to new repos")
        if plan.dirty:
            commit = _upload(api, plan, echo)
            echo(f"  committed {commit[:12]}: {len(plan.of('add', 'change'))} file(s), {human(plan.upload_bytes)} "
                 f"uploaded, {len(plan.of('delete'))} deleted  {url}/commit/{commit}")
        else:
            commit = str(plan.head)
            echo(f"  up to date at {commit[:12]}: nothing uploaded")
        result.update(commit=commit)
        if tag:
            if plan.tag_target == commit:
                echo(f"  tag {tag} already on {commit[:12]}")
            else:
                try:
                    api.create_tag(plan.repo_id, tag=tag, revision=commit)
                except Exception as err:  # noqa: BLE001
                    raise hub_error(err, plan.repo_id, f"tagging {tag} on") from None
                echo(f"  tagged {tag}: {url}/tree/{tag}")
        else:
            echo("  not tagged (pass --tag vX or set publish.tag to tag a version)")
        echo(f"  {url}")
        results.append(result)
    if dry_run:
        echo("dry run: nothing was written")
    return results


# --------------------------------------------------------------------------- verify


def verify(repo_id: str, revision: str | None = None, echo: Echo = print,
           public_key: Path | None = None) -> dict[str, Any]:
    """Download ``repo_id`` into a fresh temporary cache; check its signature (against ``public_key``, else
    the key the bundle ships) and every file against its manifest.json."""
    from huggingface_hub import snapshot_download

    with tempfile.TemporaryDirectory(prefix="aipc-verify-") as cache:
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache))
        except Exception as err:  # noqa: BLE001
            raise hub_error(err, repo_id, "downloading") from None
        commit = folder.name
        where = f"{repo_id}@{commit[:12]}"
        m = mf.read_manifest(folder, where=where)
        fix = (f"re-publish it: `aipc publish artifacts/bundles/{m.get('name', '<bundle>')}` "
               "(bundle repos are never edited by hand)")
        try:
            files = mf.check_files(folder, m, where=where, allow_extra=(*mf.HUB_FILES, signing.SIGNATURE), fix=fix)
        except PublishError as err:
            damaged = _damaged_storage(repo_id, commit, folder, m)
            if damaged:
                raise PublishError(
                    f"{where}: the Hub serves other bytes than its own commit records for {', '.join(damaged)} "
                    "(the commit lists the bundle's sha256; the bytes downloaded have another): the Hub's stored "
                    "copy is damaged, the repository's history is right",
                    fix="re-publishing cannot repair it: the Hub stores one object per content hash, so an upload of "
                        "the same bytes is skipped as already present; report the repo, file and sha256 to the Hub's "
                        "operators, and meanwhile load a local copy of the bundle") from None
            raise err from None
        key = Path(public_key) if public_key else folder / signing.PUBLIC_KEY
        fp = signing.verify(folder, key, where=where, fix=fix)  # and manifest.json is the one that was signed
        total = sum(f["size"] for f in files.values())
        whose = (f"the key {public_key} ({fp})" if public_key else
                 f"the key it ships ({fp}; compare it with the publisher's, or pass --public-key)")
        echo(f"verified {where}: signed by {whose}; {len(files)} files + manifest.json, {human(total)}, "
             "every sha256 matches")
        return {"repo_id": repo_id, "commit": commit, "files": len(files), "bytes": total, "fingerprint": fp}
