"""A small, real Hugging Face Hub-protocol HTTP server for the test suite (stdlib only).

It speaks the subset of the Hub protocol that ``huggingface_hub`` 1.21.0 uses, so the *real* client can run
against ``http://127.0.0.1:<port>``: snapshot_download / hf_hub_download (HEAD+GET ``resolve``, LFS 302
redirects, Range), model_info (``blobs=True``), list_repo_tree / list_repo_files / get_paths_info,
list_repo_refs / list_repo_commits, create_repo / delete_repo / update_repo_settings, create_tag /
delete_tag / create_branch / delete_branch, whoami, and uploads (preupload, LFS batch + PUT + verify,
NDJSON commit, create_pr).

The client reads ``HF_ENDPOINT`` / ``HF_HUB_DISABLE_XET`` at *import* time, so drive it in a subprocess with
:func:`run_hf` (or set the env vars before the first ``import huggingface_hub``).

Model of the server (what tests can rely on):

* One valid token (``HubServer.token``).  A request carrying any other Bearer token gets
  ``401`` + ``X-Error-Message: Invalid credentials in Authorization header``.  Anonymous reads of public
  repos are allowed; writes need the valid token and a namespace in ``users`` (others: 403).
* Repos live in memory as a tiny git-like model (commits with parent + ``{path: FileEntry}``, branches,
  tags, PR refs).  Blobs live on disk under ``root``: LFS objects by sha256 (``root/lfs``), regular files by
  git blob sha1 (``root/git``).
* ``create_repo`` makes an initial commit holding a ``.gitattributes`` (as the real Hub does).
  :meth:`HubServer.seed_repo` does not add one unless you pass it.
* Upload mode is decided by the server: LFS if the path matches the repo's ``lfs_patterns`` or the size is
  above ``lfs_threshold`` (1 MiB), else regular.  Size-0 files are always sent as regular by the client.
* Errors carry ``X-Error-Code`` so the client raises typed errors: ``RepoNotFound`` (404; 401 for an
  anonymous read of a private repo), ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with
  ``X-Repo-Commit``), ``GatedRepo`` (403; gated repos serve metadata but no file content, like the Hub).
* Fault injection: :meth:`HubServer.fail_next` and :meth:`HubServer.cut_next_upload`.
* Observability: ``requests`` (list of ``(method, path)``; path without query string, as sent, i.e. still
  URL-quoted), ``bytes_uploaded`` (bytes read from LFS PUT bodies, cut ones included, plus the decoded
  content of regular files in commits), ``lfs_stores`` (``{sha256: times stored}``), ``errors`` (tracebacks
  of server-side exceptions) and ``unhandled`` (requests no route matched) — both should stay empty.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_LFS_PATTERNS",
    "FileEntry",
    "HubServer",
    "HfRunError",
    "git_blob_sha1",
    "hf_env",
    "run_hf",
    "run_hf_json",
]

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_LFS_PATTERNS = ("*.safetensors", "*.bin", "*.onnx", "*.data", "*.gguf", "*.xml")
LFS_THRESHOLD = 1024 * 1024  # bytes; files strictly larger than this are LFS whatever their name

_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PREFIX_TYPES = {"datasets": "dataset", "spaces": "space"}
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_CHUNK = 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    """Git blob id of ``data`` (what the Hub uses as ETag / oid of regular files)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit. ``oid`` is the sha256 for LFS files and the git blob sha1 for regular ones."""

    lfs: bool
    oid: str
    size: int
    blob_id: str  # git blob sha1 of what git stores (the pointer file for LFS files)
    pointer_size: int | None = None


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    message: str
    date: str
    author: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    lfs_patterns: tuple[str, ...]
    private: bool = False
    gated: bool | str = False
    created_at: str = field(default_factory=_now_iso)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)


class _HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # merged into the JSON error body


class _CutConnection(Exception):
    """Raised to drop the connection without any response."""


class HubServer:
    """Hub-protocol server on 127.0.0.1 (ephemeral port).  Use as a context manager or start()/stop()."""

    def __init__(
        self,
        root: Path | str | None = None,
        token: str = DEFAULT_TOKEN,
        users: Iterable[str] = ("testuser",),
        *,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        lfs_threshold: int = LFS_THRESHOLD,
    ):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hubserver-")) if root is None else Path(root)
        self.token = token
        self.users = tuple(users)
        if not self.users:
            raise ValueError("need at least one user")
        self.lfs_patterns = tuple(lfs_patterns)
        self.lfs_threshold = lfs_threshold
        self.url = ""
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        self.bytes_uploaded = 0
        self.lfs_stores: dict[str, int] = {}
        self.errors: list[str] = []
        self.unhandled: list[tuple[str, str]] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._faults: list[list] = []  # [method, regex, status, remaining]
        self._cuts = 0
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for sub in ("lfs", "git", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"hubserver-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ fault injection / counters
    def fail_next(self, method: str, path_regex: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests whose method matches (``"*"`` = any) and whose path (no query,
        still URL-quoted) matches ``re.search(path_regex)`` with ``status`` (JSON error body)."""
        with self._lock:
            self._faults.append([method.upper(), re.compile(path_regex), int(status), int(times)])

    def cut_next_upload(self, times: int = 1) -> None:
        """The next ``times`` LFS object PUTs read half of the body, then drop the connection unanswered."""
        with self._lock:
            self._cuts += int(times)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_uploaded = 0
            self.lfs_stores.clear()

    def count(self, method: str, path_regex: str) -> int:
        """How many logged requests match ``method`` and ``re.search(path_regex, path)``."""
        rx = re.compile(path_regex)
        with self._lock:
            return sum(1 for m, p in self.requests if m == method.upper() and rx.search(p))

    def _take_fault(self, method: str, path: str) -> int | None:
        with self._lock:
            for rule in self._faults:
                if rule[3] > 0 and rule[0] in ("*", method) and rule[1].search(path):
                    rule[3] -= 1
                    if rule[3] <= 0:
                        self._faults.remove(rule)
                    return rule[2]
        return None

    def _take_cut(self) -> bool:
        with self._lock:
            if self._cuts > 0:
                self._cuts -= 1
                return True
        return False

    # ------------------------------------------------------------------ blob storage
    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    def has_lfs_object(self, sha256: str) -> bool:
        return _SHA256_RE.fullmatch(sha256 or "") is not None and self.lfs_path(sha256).is_file()

    def _git_path(self, sha1: str) -> Path:
        return self.root / "git" / sha1

    def _write_atomic(self, dest: Path, data: bytes) -> None:
        if dest.exists():
            return
        tmp = self.root / "tmp" / f"{dest.name}.{next(self._counter)}"
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def _store_regular(self, data: bytes) -> FileEntry:
        sha1 = git_blob_sha1(data)
        self._write_atomic(self._git_path(sha1), data)
        return FileEntry(lfs=False, oid=sha1, size=len(data), blob_id=sha1)

    def _store_lfs(self, data: bytes) -> FileEntry:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.lfs_path(sha256).exists():
            self._write_atomic(self.lfs_path(sha256), data)
        return self._lfs_entry(sha256, len(data))

    @staticmethod
    def _lfs_entry(sha256: str, size: int) -> FileEntry:
        pointer = lfs_pointer(sha256, size)
        return FileEntry(lfs=True, oid=sha256, size=size, blob_id=git_blob_sha1(pointer), pointer_size=len(pointer))

    def _entry_path(self, entry: FileEntry) -> Path:
        return self.lfs_path(entry.oid) if entry.lfs else self._git_path(entry.oid)

    # ------------------------------------------------------------------ repo model
    def _is_lfs(self, repo: Repo, path: str, size: int) -> bool:
        if size > self.lfs_threshold:
            return True
        base = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(base, p) for p in repo.lfs_patterns)

    def _new_repo(self, repo_type: str, repo_id: str, *, private=False, gated=False, lfs_patterns=None) -> Repo:
        repo = Repo(
            repo_type=repo_type,
            repo_id=repo_id,
            lfs_patterns=tuple(self.lfs_patterns if lfs_patterns is None else lfs_patterns),
            private=bool(private),
            gated=gated,
        )
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _make_commit(
        self, repo: Repo, parent: str | None, files: dict[str, FileEntry], title: str, message: str = ""
    ) -> str:
        date = _now_iso()
        h = hashlib.sha1()
        h.update(f"parent {parent}\n".encode())
        for path in sorted(files):
            h.update(f"{path}\0{files[path].blob_id}\n".encode())
        h.update(f"{title}\n{message}\n{date}\n{next(self._counter)}\n{id(self)}".encode())
        sha = h.hexdigest()
        repo.commits[sha] = Commit(
            sha=sha, parent=parent, files=dict(files), title=title, message=message, date=date, author=self.users[0]
        )
        return sha

    def _resolve_rev(self, repo: Repo, rev: str | None) -> str:
        rev = rev or "main"
        if rev.startswith("refs/heads/") and rev[len("refs/heads/"):] in repo.branches:
            return repo.branches[rev[len("refs/heads/"):]]
        if rev.startswith("refs/tags/") and rev[len("refs/tags/"):] in repo.tags:
            return repo.tags[rev[len("refs/tags/"):]]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m and int(m.group(1)) in repo.pulls:
            return repo.pulls[int(m.group(1))]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        if _SHA1_RE.fullmatch(rev) and rev in repo.commits:
            return rev
        raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        return repo

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ------------------------------------------------------------------ direct (server-side) helpers for tests
    def seed_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str | Path],
        *,
        message: str = "init",
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        gated: bool | str = False,
        private: bool = False,
        repo_type: str = "model",
        branch: str = "main",
    ) -> str:
        """Create the repo if needed and commit ``files`` (added/overwritten on top of ``branch``).

        Values are bytes, str (UTF-8) or a Path to read.  Returns the new commit sha.  ``lfs_patterns``,
        ``gated`` and ``private`` are applied when the repo is created (use :meth:`set_repo` later)."""
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                repo = self._new_repo(repo_type, repo_id, private=private, gated=gated, lfs_patterns=lfs_patterns)
            parent = repo.branches.get(branch)
            current = dict(repo.commits[parent].files) if parent else {}
            for path, value in files.items():
                if isinstance(value, Path):
                    data = value.read_bytes()
                elif isinstance(value, str):
                    data = value.encode("utf-8")
                else:
                    data = bytes(value)
                path = path.strip("/")
                lfs = self._is_lfs(repo, path, len(data)) and len(data) > 0
                current[path] = self._store_lfs(data) if lfs else self._store_regular(data)
            sha = self._make_commit(repo, parent, current, message)
            repo.branches[branch] = sha
            return sha

    def set_repo(self, repo_id: str, *, repo_type: str = "model", private: bool | None = None, gated=None) -> None:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if private is not None:
                repo.private = bool(private)
            if gated is not None:
                repo.gated = gated

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve_rev(repo, revision)
            repo.tags[tag] = sha
            return sha

    def create_branch(self, repo_id: str, branch: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve_rev(repo, revision)
            repo.branches[branch] = sha
            return sha

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self._repos

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            return self._resolve_rev(self._get_repo(repo_type, repo_id), revision)

    def list_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, FileEntry]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return dict(repo.commits[self._resolve_rev(repo, revision)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        entry = self.list_files(repo_id, revision, repo_type=repo_type)[path]
        return self._entry_path(entry).read_bytes()

    def commit_count(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> int:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha: str | None = self._resolve_rev(repo, revision)
            n = 0
            while sha:
                n += 1
                sha = repo.commits[sha].parent
            return n


# ---------------------------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------------------------


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Single byte range → inclusive (start, end); None = serve the whole body; raises 416."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # unsupported / multi-range: ignore, answer 200
    a, b = m.groups()
    if a == "":
        n = int(b)
        if n == 0 or size == 0:
            raise _HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size - 1
    start = int(a)
    end = min(int(b), size - 1) if b else size - 1
    if start >= size or start > end:
        raise _HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1.0"
    timeout = 60

    # -- plumbing ---------------------------------------------------------------------------------------------
    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _iter_body(self) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked)."""
        self._body_consumed = True
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, _CHUNK))
                    if not chunk:
                        raise ConnectionError("client closed mid-body")
                    remaining -= len(chunk)
                    yield chunk
                self.rfile.readline(65537)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK))
                if not chunk:
                    raise ConnectionError("client closed mid-body")
                remaining -= len(chunk)
                yield chunk

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _json_body(self) -> dict:
        try:
            data = json.loads(self._body or b"{}")
        except ValueError:
            raise _HubError(400, "Invalid JSON body") from None
        if not isinstance(data, dict):
            raise _HubError(400, "JSON body must be an object")
        return data

    def _send(
        self,
        status: int,
        body: bytes | dict | list = b"",
        headers: dict | None = None,
        content_type: str = "application/json",
    ) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if not self._body_consumed:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_file(self, path: Path, size: int, headers: dict) -> None:
        rng = _parse_range(self.headers.get("Range"), size)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
        if rng is None:
            status, start, length = 200, 0, size
        else:
            status, start, length = 206, rng[0], rng[1] - rng[0] + 1
            headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        try:
            with open(path, "rb") as f:
                f.seek(start)
                remaining = length
                while remaining:
                    chunk = f.read(min(remaining, _CHUNK))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        self._raw_path = split.path
        self._query = parse_qs(split.query, keep_blank_values=True)
        self._body_consumed = False
        self._body = b""
        with hub._lock:
            hub.requests.append((method, self._raw_path))
        is_lfs_put = method == "PUT" and self._raw_path.startswith("/_lfs/upload/")
        try:
            if not is_lfs_put:
                self._body = self._read_body()
            status = hub._take_fault(method, self._raw_path)
            if status is not None:
                if is_lfs_put:
                    for _ in self._iter_body():
                        pass
                raise _HubError(status, f"Injected failure ({status}) for {method} {self._raw_path}")
            self._authenticate()
            self._route(method)
        except _HubError as e:
            headers = dict(e.headers)
            headers["X-Error-Message"] = e.message
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message, **e.extra}, headers)
        except _CutConnection:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionError):
            self.close_connection = True
        except Exception:  # pragma: no cover - surfaced through hub.errors
            tb = traceback.format_exc()
            with hub._lock:
                hub.errors.append(f"{method} {self.path}\n{tb}")
            try:
                self._send(500, {"error": "Internal server error"}, {"X-Error-Message": "Internal server error"})
            except OSError:
                self.close_connection = True

    def _authenticate(self) -> None:
        auth = self.headers.get("Authorization")
        self.authed = False
        if not auth:
            return
        parts = auth.split(None, 1)
        token = parts[1].strip() if len(parts) == 2 and parts[0].lower() == "bearer" else None
        if token != self.hub.token:
            raise _HubError(401, "Invalid credentials in Authorization header")
        self.authed = True

    # -- routing ----------------------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        segs = [unquote(s) for s in self._raw_path.split("/")[1:]]
        while segs and segs[-1] == "":
            segs.pop()
        if segs[:1] == ["api"]:
            if self._route_api(method, segs[1:]):
                return
        elif segs[:1] == ["_lfs"]:
            if self._route_lfs(method, segs[1:]):
                return
        else:
            repo_type = "model"
            if segs[:1] and segs[0] in _PREFIX_TYPES:
                repo_type, segs = _PREFIX_TYPES[segs[0]], segs[1:]
            if len(segs) == 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                if method == "POST":
                    return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}")
            elif len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        with self.hub._lock:
            self.hub.unhandled.append((method, self._raw_path))
        raise _HubError(404, f"Not found: {method} {self._raw_path}")

    def _route_api(self, method: str, segs: list[str]) -> bool:
        if segs == ["whoami-v2"] and method == "GET":
            self._whoami()
        elif segs == ["agent-harnesses"] and method == "GET":  # fetched by the `hf` CLI; empty registry
            self._send(200, {"standardEnvVars": [], "harnesses": {}})
        elif segs == ["validate-yaml"] and method == "POST":
            self._send(200, {"errors": [], "warnings": []})
        elif segs == ["repos", "create"] and method == "POST":
            self._create_repo()
        elif segs == ["repos", "delete"] and method == "DELETE":
            self._delete_repo()
        elif len(segs) >= 3 and segs[0] in _API_TYPES:
            repo_type, repo_id, rest = _API_TYPES[segs[0]], f"{segs[1]}/{segs[2]}", segs[3:]
            op = rest[0] if rest else ""
            arg = "/".join(rest[1:])  # revisions are sent quoted as one segment; be lenient if not
            if not rest and method == "GET":
                self._repo_info(repo_type, repo_id, None)
            elif op == "revision" and arg and method == "GET":
                self._repo_info(repo_type, repo_id, arg)
            elif op == "tree" and len(rest) >= 2 and method == "GET":
                self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
            elif op == "paths-info" and arg and method == "POST":
                self._paths_info(repo_type, repo_id, arg)
            elif op == "refs" and len(rest) == 1 and method == "GET":
                self._refs(repo_type, repo_id)
            elif op == "commits" and arg and method == "GET":
                self._list_commits(repo_type, repo_id, arg)
            elif op == "tag" and arg and method in ("POST", "DELETE"):
                (self._create_tag if method == "POST" else self._delete_tag)(repo_type, repo_id, arg)
            elif op == "branch" and arg and method in ("POST", "DELETE"):
                (self._create_branch if method == "POST" else self._delete_branch)(repo_type, repo_id, arg)
            elif op == "preupload" and arg and method == "POST":
                self._preupload(repo_type, repo_id, arg)
            elif op == "commit" and arg and method == "POST":
                self._commit(repo_type, repo_id, arg)
            elif op == "settings" and len(rest) == 1 and method == "PUT":
                self._settings(repo_type, repo_id)
            else:
                return False
        else:
            return False
        return True

    def _route_lfs(self, method: str, segs: list[str]) -> bool:
        if len(segs) == 2 and segs[0] == "upload" and method == "PUT":
            self._lfs_put(segs[1])
        elif segs == ["verify"] and method == "POST":
            self._lfs_verify()
        elif len(segs) == 2 and segs[0] == "objects" and method in ("GET", "HEAD"):
            oid = segs[1]
            if not self.hub.has_lfs_object(oid):
                raise _HubError(404, f"LFS object {oid} not found")
            path = self.hub.lfs_path(oid)
            self._send_file(path, path.stat().st_size, {"ETag": f'"{oid}"'})
        else:
            return False
        return True

    # -- access control ---------------------------------------------------------------------------------------
    def _repo_read(self, repo_type: str, repo_id: str, *, content: bool = False) -> Repo:
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not self.authed:
            raise _HubError(401, "Invalid username or password.", "RepoNotFound")
        if content and repo.gated:
            raise _HubError(
                403,
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.hub._repo_url(repo)} to ask for access.",
                "GatedRepo",
            )
        return repo

    def _require_auth(self) -> None:
        if not self.authed:
            raise _HubError(401, "You must be authenticated to perform this action (missing token)")

    def _check_namespace(self, namespace: str, what: str = "repo") -> None:
        if namespace not in self.hub.users:
            raise _HubError(403, f"You don't have the rights to write to {what} under the namespace {namespace!r}")

    def _repo_write(self, repo_type: str, repo_id: str) -> Repo:
        self._require_auth()
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        self._check_namespace(repo_id.split("/")[0], repo_id)
        return repo

    # -- endpoints: account / repos ---------------------------------------------------------------------------
    def _whoami(self) -> None:
        if not self.authed:
            raise _HubError(401, "Invalid credentials in Authorization header")
        users = self.hub.users
        self._send(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(users[0].encode()).hexdigest()[:24],
                "name": users[0],
                "fullname": users[0],
                "email": f"{users[0]}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "orgs": [{"type": "org", "name": o, "roleInOrg": "admin"} for o in users[1:]],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            },
        )

    def _repo_target(self, body: dict) -> tuple[str, str]:
        name = body.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or "--" in name or ".." in name:
            raise _HubError(400, f"Invalid repo name: {name!r}")
        namespace = body.get("organization") or self.hub.users[0]
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Invalid repo type: {repo_type!r}")
        return repo_type, f"{namespace}/{name}"

    def _create_repo(self) -> None:
        self._require_auth()
        body = self._json_body()
        repo_type, repo_id = self._repo_target(body)
        self._check_namespace(repo_id.split("/")[0])
        hub = self.hub
        private = body.get("private") is True or body.get("visibility") == "private"
        with hub._lock:
            existing = hub._repos.get((repo_type, repo_id))
            if existing is not None:
                # the client reads "url" from the 409 body too (create_repo(exist_ok=True))
                url = hub._repo_url(existing)
                raise _HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo = hub._new_repo(repo_type, repo_id, private=private)
            attrs = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in repo.lfs_patterns)
            sha = hub._make_commit(repo, None, {".gitattributes": hub._store_regular(attrs.encode())}, "initial commit")
            repo.branches["main"] = sha
            url = hub._repo_url(repo)
        self._send(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self) -> None:
        self._require_auth()
        repo_type, repo_id = self._repo_target(self._json_body())
        with self.hub._lock:
            if (repo_type, repo_id) not in self.hub._repos:
                raise _HubError(404, "Repository not found", "RepoNotFound")
            self._check_namespace(repo_id.split("/")[0])
            del self.hub._repos[(repo_type, repo_id)]
        self._send(200, {})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        body = self._json_body()
        with self.hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if "private" in body and body["private"] is not None:
                repo.private = bool(body["private"])
            if body.get("visibility") in ("private", "public"):
                repo.private = body["visibility"] == "private"
            if "gated" in body and body["gated"] is not None:
                repo.gated = body["gated"]
        self._send(200, {})

    # -- endpoints: metadata ----------------------------------------------------------------------------------
    def _sibling(self, path: str, entry: FileEntry, blobs: bool) -> dict:
        item: dict = {"rfilename": path}
        if blobs:
            item["size"] = entry.size
            item["blobId"] = entry.blob_id
            if entry.lfs:
                item["lfs"] = {"sha256": entry.oid, "size": entry.size, "pointerSize": entry.pointer_size}
        return item

    def _repo_info(self, repo_type: str, repo_id: str, rev: str | None) -> None:
        hub = self.hub
        with hub._lock:
            repo = self._repo_read(repo_type, repo_id)
            sha = hub._resolve_rev(repo, rev)
            commit = repo.commits[sha]
            blobs = _truthy(self._query.get("blobs"))
            info = {
                "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": ("manual" if repo.gated is True else repo.gated) or False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [self._sibling(p, e, blobs) for p, e in sorted(commit.files.items())],
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if repo_type == "model":
                info["modelId"] = repo_id
        self._send(200, info)

    def _tree_items(self, repo: Repo, commit: Commit, prefix: str, recursive: bool, expand: bool) -> list[dict]:
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        files = {p: e for p, e in commit.files.items() if p.startswith(base)}
        if not files and prefix:
            if prefix in commit.files:
                raise _HubError(400, f"{prefix} is a file, not a directory")
            raise _HubError(404, f"Entry not found: {prefix}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        dirs: set[str] = set()
        out_files = []
        for path, _entry in files.items():
            rel = path[len(base):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(base + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                out_files.append(path)
        items = [self._dir_item(commit, d) for d in dirs]
        items += [self._file_item(repo, commit, p, expand) for p in out_files]
        return sorted(items, key=lambda i: (i["type"] != "directory", i["path"]))

    @staticmethod
    def _dir_item(commit: Commit, path: str) -> dict:
        h = hashlib.sha1()
        for p in sorted(commit.files):
            if p.startswith(path + "/"):
                h.update(f"{p}\0{commit.files[p].blob_id}\n".encode())
        return {"type": "directory", "oid": h.hexdigest(), "size": 0, "path": path}

    def _file_item(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        entry = commit.files[path]
        item: dict = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.oid, "size": entry.size, "pointerSize": entry.pointer_size}
        if expand:
            last = commit
            while last.parent and repo.commits[last.parent].files.get(path) == entry:
                last = repo.commits[last.parent]
            item["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return item

    def _tree(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        with self.hub._lock:
            repo = self._repo_read(repo_type, repo_id)
            commit = repo.commits[self.hub._resolve_rev(repo, rev)]
            items = self._tree_items(
                repo, commit, path, _truthy(self._query.get("recursive")), _truthy(self._query.get("expand"))
            )
        self._send(200, items)

    def _paths_info(self, repo_type: str, repo_id: str, rev: str) -> None:
        ctype = (self.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            body = self._json_body()
            paths, expand = body.get("paths") or [], bool(body.get("expand"))
        else:
            form = parse_qs(self._body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy(form.get("expand"))
        if isinstance(paths, str):
            paths = [paths]
        with self.hub._lock:
            repo = self._repo_read(repo_type, repo_id)
            commit = repo.commits[self.hub._resolve_rev(repo, rev)]
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.files:
                    out.append(self._file_item(repo, commit, p, expand))
                elif any(f.startswith(p + "/") for f in commit.files):
                    out.append(self._dir_item(commit, p))
        self._send(200, out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        with self.hub._lock:
            repo = self._repo_read(repo_type, repo_id)
            data: dict = {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in sorted(repo.branches.items())
                ],
                "converts": [],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s} for t, s in sorted(repo.tags.items())],
            }
            if _truthy(self._query.get("include_prs")):
                data["pullRequests"] = [
                    {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": s}
                    for n, s in sorted(repo.pulls.items())
                ]
        self._send(200, data)

    def _list_commits(self, repo_type: str, repo_id: str, rev: str) -> None:
        with self.hub._lock:
            repo = self._repo_read(repo_type, repo_id)
            sha: str | None = self.hub._resolve_rev(repo, rev)
            out = []
            while sha:
                c = repo.commits[sha]
                out.append(
                    {
                        "id": c.sha,
                        "title": c.title,
                        "message": c.message,
                        "authors": [{"user": c.author}],
                        "date": c.date,
                    }
                )
                sha = c.parent
        self._send(200, out)

    # -- endpoints: refs --------------------------------------------------------------------------------------
    def _create_tag(self, repo_type: str, repo_id: str, rev: str) -> None:
        body = self._json_body()
        tag = body.get("tag")
        with self.hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if not isinstance(tag, str) or not tag or tag.startswith("refs/"):
                raise _HubError(400, f"Invalid tag name: {tag!r}")
            sha = self.hub._resolve_rev(repo, rev)
            if tag in repo.tags:
                raise _HubError(409, f"Tag '{tag}' already exists")
            repo.tags[tag] = sha
        self._send(200, {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": sha})

    def _delete_tag(self, repo_type: str, repo_id: str, tag: str) -> None:
        with self.hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if tag not in repo.tags:
                raise _HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del repo.tags[tag]
        self._send(200, {})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        body = self._json_body()
        with self.hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if branch in repo.branches:
                raise _HubError(409, f"Branch '{branch}' already exists")
            if body.get("emptyBranch"):
                sha = self.hub._make_commit(repo, None, {}, "empty branch")
            else:
                sha = self.hub._resolve_rev(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = sha
        self._send(200, {})

    def _delete_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        with self.hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if branch not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise _HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
        self._send(200, {})

    # -- endpoints: uploads -----------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, rev: str) -> None:
        body = self._json_body()
        files = body.get("files")
        if not isinstance(files, list):
            raise _HubError(400, "Missing 'files'")
        hub = self.hub
        with hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            commit = repo.commits[hub._resolve_rev(repo, rev)]
            out = []
            for f in files:
                path, size = str(f.get("path", "")).strip("/"), int(f.get("size") or 0)
                item = {
                    "path": f.get("path"),
                    "uploadMode": "lfs" if hub._is_lfs(repo, path, size) else "regular",
                    "shouldIgnore": False,
                }
                if path in commit.files:
                    item["oid"] = commit.files[path].oid
                out.append(item)
        self._send(200, {"files": out, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        body = self._json_body()
        hub = self.hub
        operation = body.get("operation", "upload")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise _HubError(400, "Missing 'objects'")
        if operation == "upload":
            self._repo_write(repo_type, repo_id)
        else:
            self._repo_read(repo_type, repo_id, content=True)
        out = []
        for obj in objects:
            oid, size = obj.get("oid"), obj.get("size")
            item: dict = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                item["error"] = {"code": 422, "message": "Invalid oid or size"}
            elif hub.has_lfs_object(oid):
                if hub.lfs_path(oid).stat().st_size != size:
                    item["error"] = {"code": 422, "message": "Size does not match the stored object"}
                elif operation == "download":
                    item["actions"] = {"download": {"href": f"{hub.url}/_lfs/objects/{oid}"}}
                # upload of a known object: no actions = "already have it"
            elif operation == "download":
                item["error"] = {"code": 404, "message": "Object does not exist"}
            else:
                item["authenticated"] = True
                item["actions"] = {
                    "upload": {"href": f"{hub.url}/_lfs/upload/{oid}?size={size}"},
                    "verify": {"href": f"{hub.url}/_lfs/verify"},
                }
            out.append(item)
        self._send(
            200,
            {"transfer": "basic", "objects": out, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, oid: str) -> None:
        hub = self.hub
        if not _SHA256_RE.fullmatch(oid):
            for _ in self._iter_body():
                pass
            raise _HubError(400, f"Invalid oid {oid!r}")
        expected = self._query.get("size")
        if hub._take_cut():
            total = int(self.headers.get("Content-Length") or 0)
            want, got = max(1, total // 2), 0
            for chunk in self._iter_body():
                got += len(chunk)
                if got >= want:
                    break
            with hub._lock:
                hub.bytes_uploaded += got
            raise _CutConnection()
        tmp = hub.root / "tmp" / f"{oid}.{next(hub._counter)}.part"
        h, n = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self._iter_body():
                    h.update(chunk)
                    f.write(chunk)
                    n += len(chunk)
        finally:
            with hub._lock:
                hub.bytes_uploaded += n
        if h.hexdigest() != oid or (expected and int(expected[-1]) != n):
            tmp.unlink(missing_ok=True)
            raise _HubError(400, f"Uploaded content does not match oid/size (got sha256 {h.hexdigest()}, {n} bytes)")
        os.replace(tmp, hub.lfs_path(oid))
        with hub._lock:
            hub.lfs_stores[oid] = hub.lfs_stores.get(oid, 0) + 1
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self) -> None:
        body = self._json_body()
        oid, size = body.get("oid"), body.get("size")
        if not isinstance(oid, str) or not self.hub.has_lfs_object(oid):
            raise _HubError(404, f"LFS object {oid} not found")
        if size is not None and self.hub.lfs_path(oid).stat().st_size != size:
            raise _HubError(400, "Size mismatch")
        self._send(200, {"oid": oid, "size": size})

    def _commit(self, repo_type: str, repo_id: str, rev: str) -> None:
        hub = self.hub
        create_pr = _truthy(self._query.get("create_pr"))
        try:
            lines = [json.loads(line) for line in self._body.decode("utf-8").splitlines() if line.strip()]
        except ValueError:
            raise _HubError(400, "Invalid NDJSON commit payload") from None
        with hub._lock:
            repo = self._repo_write(repo_type, repo_id)
            if not create_pr and rev not in repo.branches:
                hub._resolve_rev(repo, rev)  # RevisionNotFound if it does not exist at all
                raise _HubError(400, f"Invalid rev id: {rev} is not a branch")
            base = hub._resolve_rev(repo, rev)
            files = dict(repo.commits[base].files)
            title, description, uploaded = "", "", 0
            for op in lines:
                key, value = op.get("key"), op.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if key == "header":
                    title, description = value.get("summary") or "", value.get("description") or ""
                    parent = value.get("parentCommit")
                    if parent and parent != base:
                        raise _HubError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    if not path:
                        raise _HubError(400, "file operation without path")
                    content = value.get("content") or ""
                    if value.get("encoding", "base64") == "base64":
                        data = base64.b64decode(content)
                    else:
                        data = content.encode("utf-8")
                    uploaded += len(data)
                    files[path] = hub._store_regular(data)
                elif key == "lfsFile":
                    oid, size = value.get("oid"), value.get("size")
                    if value.get("algo", "sha256") != "sha256" or not hub.has_lfs_object(oid):
                        raise _HubError(
                            422,
                            f"Your push was rejected because an LFS pointer pointed to a file that does not exist "
                            f"({path}: {oid})",
                        )
                    stored = hub.lfs_path(oid).stat().st_size
                    if size is not None and int(size) != stored:
                        raise _HubError(422, f"LFS object size mismatch for {path}: {size} != {stored}")
                    if not path:
                        raise _HubError(400, "lfsFile operation without path")
                    files[path] = hub._lfs_entry(oid, stored)
                elif key == "deletedFile":
                    if path not in files:
                        raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": base})
                    del files[path]
                elif key == "deletedFolder":
                    doomed = [p for p in files if p.startswith(path + "/")] if path else list(files)
                    if not doomed:
                        raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": base})
                    for p in doomed:
                        del files[p]
                else:
                    raise _HubError(400, f"Unknown commit operation key {key!r}")
            sha = hub._make_commit(repo, base, files, title or "Upload files", description)
            result = {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{hub._repo_url(repo)}/commit/{sha}",
                "hookOutput": "",
            }
            if create_pr:
                num = max(repo.pulls, default=0) + 1
                repo.pulls[num] = sha
                result["pullRequestUrl"] = f"{hub._repo_url(repo)}/discussions/{num}"
            else:
                repo.branches[rev] = sha
            hub.bytes_uploaded += uploaded
        self._send(200, result)

    # -- endpoints: downloads ---------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        hub = self.hub
        with hub._lock:
            repo = self._repo_read(repo_type, repo_id, content=True)
            sha = hub._resolve_rev(repo, rev)
            entry = repo.commits[sha].files.get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        if entry.lfs:
            self._send(
                302,
                b"",
                {
                    "Location": f"{hub.url}/_lfs/objects/{entry.oid}",
                    "X-Repo-Commit": sha,
                    "ETag": f'"{entry.blob_id}"',
                    "X-Linked-Etag": f'"{entry.oid}"',
                    "X-Linked-Size": entry.size,
                },
            )
        else:
            self._send_file(hub._entry_path(entry), entry.size, {"X-Repo-Commit": sha, "ETag": f'"{entry.oid}"'})


# ---------------------------------------------------------------------------------------------------------------
# Running the real client
# ---------------------------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parents[1]
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_USE_SERVER_TOKEN = object()


class HfRunError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the script's stdout/stderr tails."""

    def __str__(self) -> str:
        return (
            f"huggingface_hub script exited with {self.returncode}\n"
            f"--- stdout ---\n{(self.stdout or '')[-4000:]}\n--- stderr ---\n{(self.stderr or '')[-8000:]}"
        )


def hf_env(
    server: HubServer,
    token: str | None | object = _USE_SERVER_TOKEN,
    hf_home: Path | str | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a process that runs huggingface_hub against ``server`` (no proxies, no Xet)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in _PROXY_VARS and k.upper() != "NO_PROXY"
    }
    if hf_home is None:
        hf_home = server.root / "hf_home" / f"run-{next(server._counter)}"
    Path(hf_home).mkdir(parents=True, exist_ok=True)
    env.update(
        HF_ENDPOINT=server.url,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1" if token is None else "0",
        HF_HUB_OFFLINE="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    if token is _USE_SERVER_TOKEN:
        token = server.token
    if token is not None:
        env["HF_TOKEN"] = str(token)
    env.update(extra_env or {})
    return env


def run_hf(
    server: HubServer,
    script: str,
    token: str | None | object = _USE_SERVER_TOKEN,
    hf_home: Path | str | None = None,
    extra_env: dict[str, str] | None = None,
    check: bool = True,
    *,
    timeout: float = 120,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -c <script>`` (dedented) with huggingface_hub pointed at ``server``.

    ``token``: default = the server's valid token (as ``HF_TOKEN``); ``None`` = anonymous; any string = that
    token.  ``hf_home``: default = a fresh directory under ``server.root`` per call (so no shared cache).
    ``cwd`` defaults to the repository root, so project modules are importable.  With ``check=True`` a non-zero
    exit raises :class:`HfRunError` showing stdout/stderr."""
    env = hf_env(server, token=token, hf_home=hf_home, extra_env=extra_env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=str(cwd or _REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise HfRunError(proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr)
    return proc


def run_hf_json(server: HubServer, script: str, **kwargs):
    """:func:`run_hf` (check=True) and parse the last non-empty stdout line as JSON."""
    proc = run_hf(server, script, **kwargs)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise HfRunError(0, proc.args, output=proc.stdout, stderr=proc.stderr)
    return json.loads(lines[-1])
