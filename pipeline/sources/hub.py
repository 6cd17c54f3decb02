"""Download a pinned snapshot from the Hugging Face Hub, verifying every LFS file's sha256.

Uses huggingface_hub as-is, so ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HOME`` and ``HF_HUB_OFFLINE``
behave exactly as they do for the Hub client. Files land in the Hub cache first (so an offline
machine with a warm cache works) and are then copied into the stage's output folder.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from ..config import HubSource
from ..errors import HubError, SourceError
from ..fsutil import sha256_file
from .checkpoint import ALLOW_PATTERNS

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
API_TIMEOUT_S = 15

WAYS_OUT = (
    "connect to the Hub (or set HF_ENDPOINT to a reachable mirror); or pre-fill the Hub cache "
    "(HF_HOME) on a connected machine and run with HF_HUB_OFFLINE=1; or set model.source: local "
    "with model.path; or run the offline demo on the embedded model (see README, command 1)"
)


def _hub_errors():
    from huggingface_hub import errors

    return errors


def _translate(err: Exception, model: HubSource) -> HubError:
    """Map huggingface_hub/httpx errors to one clear message (never including the token)."""
    import httpx

    e = _hub_errors()
    repo = model.repo_id
    if isinstance(err, e.GatedRepoError):
        return HubError(f"{repo} is gated and this token has no access",
                        fix="accept the model's terms on its Hub page with your account, then set HF_TOKEN "
                        "to a token of that account")
    if isinstance(err, e.RevisionNotFoundError):
        return HubError(f"params.yaml: model.revision = {model.revision!r} does not exist in {repo}",
                        fix="use a commit sha, branch or tag of that repo")
    if isinstance(err, e.RepositoryNotFoundError):
        return HubError(f"params.yaml: model.repo_id = {repo!r}: repository not found (or private)",
                        fix="check the repo id; for a private repo set HF_TOKEN to a token with read access")
    if isinstance(err, e.HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            return HubError(f"the Hub refused the token ({status}) for {repo}",
                            fix="set HF_TOKEN to a valid token (hf auth login), or unset it for public repos")
        return HubError(f"the Hub answered {status} for {repo}", fix="retry later; " + WAYS_OUT)
    if isinstance(err, (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled, httpx.TransportError, ConnectionError)):
        return HubError(
            f"cannot reach the Hugging Face Hub and {repo}@{model.revision} is not in the local cache",
            fix=WAYS_OUT,
        )
    return HubError(f"download of {repo}@{model.revision} failed: {type(err).__name__}: {err}", fix=WAYS_OUT)


def _remote_info(model: HubSource):
    """model_info with file metadata, or None when the Hub is unreachable / offline mode is on."""
    import httpx
    from huggingface_hub import HfApi, constants

    e = _hub_errors()
    if constants.HF_HUB_OFFLINE:
        log.info("HF_HUB_OFFLINE is set: using the local Hub cache only")
        return None
    try:
        return HfApi().model_info(model.repo_id, revision=model.revision, files_metadata=True,
                                  timeout=API_TIMEOUT_S)
    except e.HfHubHTTPError as err:
        raise _translate(err, model) from None
    except (httpx.TransportError, ConnectionError, e.OfflineModeIsEnabled) as err:
        log.warning("Hub unreachable (%s); trying the local cache", type(err).__name__)
        return None


def download(model: HubSource, out: Path) -> dict:
    from huggingface_hub import snapshot_download

    if not model.pinned:
        log.warning(
            "model.revision = %r is not pinned (a branch or tag can move); the resolved commit is "
            "recorded in source.json — pin it in params.yaml for reproducible builds", model.revision)
    info = _remote_info(model)
    expected: dict[str, str] = {}
    if info is not None:
        names = [s.rfilename for s in info.siblings or []]
        if not any(n.endswith(".safetensors") for n in names):
            pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
            raise SourceError(
                f"{model.repo_id}@{model.revision} has no safetensors weights"
                + (f" (only {', '.join(pickles[:4])})" if pickles else ""),
                fix="choose a revision that ships *.safetensors; pickled weights are refused",
            )
        expected = {s.rfilename: s.lfs.sha256 for s in info.siblings or [] if s.lfs is not None}
    revision = info.sha if info is not None else model.revision
    try:
        snap = Path(snapshot_download(model.repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                      local_files_only=info is None))
    except Exception as err:  # noqa: BLE001 - translated into one message below
        raise _translate(err, model) from None
    commit = info.sha if info is not None else snap.name
    verified = []
    for p in sorted(snap.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(snap).as_posix()
        digest = sha256_file(p)
        blob = p.resolve().name  # the cache names LFS blobs by the sha256 the Hub sent
        want = expected.get(rel) or (blob if _SHA256_RE.match(blob) else None)
        if want is not None:
            if digest != want:
                raise SourceError(
                    f"{rel} from {model.repo_id}@{commit[:12]}: sha256 {digest} differs from the Hub's {want}",
                    fix=f"delete the cached copy ({p.resolve()}) and download again",
                )
            verified.append(rel)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    log.info("downloaded %s@%s (%d files, %d LFS files verified)", model.repo_id, commit[:12],
             len(list(out.rglob('*'))), len(verified))
    return {
        "source": "hub",
        "repo_id": model.repo_id,
        "revision": model.revision,
        "commit": commit,
        "pinned": model.pinned,
        "lfs_sha256_verified": verified,
    }
