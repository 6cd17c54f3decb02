"""The local Hub-protocol server (tests/hubserver.py) against the real huggingface_hub client (in subprocesses)."""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest

try:
    from .hubserver import HubServer, git_blob_sha1, run_hf, run_hf_json
except ImportError:
    from hubserver import HubServer, git_blob_sha1, run_hf, run_hf_json

REPO = "microsoft/Phi-3-mini-4k-instruct"

# Prints {relative path: sha256} of what a snapshot_download call returned, as JSON on the last line.
SNAPSHOT_HASHES = """
import hashlib, json, os
from huggingface_hub import snapshot_download

def hashes(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def phi3(hub_server):
    """A Phi-3-like repo: commit 1 (tagged v1) then commit 2 which changes the weights and config."""
    v1 = {
        "config.json": b'{"model_type": "phi3", "hidden_size": 64}',
        "tokenizer.json": b'{"version": "1.0"}',
        "README.md": b"---\nlicense: mit\n---\n# tiny phi3\n",
        "model-00001-of-00002.safetensors": os.urandom(300_000),
        "model-00002-of-00002.safetensors": os.urandom(120_000),
        "onnx/model.onnx": os.urandom(50_000),
    }
    sha1 = hub_server.seed_repo(REPO, v1, message="v1")
    hub_server.create_tag(REPO, "v1", sha1)
    v2 = {
        "config.json": b'{"model_type": "phi3", "hidden_size": 128}',
        "model-00001-of-00002.safetensors": os.urandom(1000),
    }
    sha2 = hub_server.seed_repo(REPO, v2, message="v2")
    return {"v1": v1, "v2": {**v1, **v2}, "sha1": sha1, "sha2": sha2}


def test_snapshot_download_pinned_sha_tag_and_main(hub_server, phi3):
    result = run_hf_json(
        hub_server,
        SNAPSHOT_HASHES
        + f"""
pats = ["*.json", "*.safetensors"]
out = {{
    "sha": hashes(snapshot_download({REPO!r}, revision={phi3["sha1"]!r}, allow_patterns=pats)),
    "tag": hashes(snapshot_download({REPO!r}, revision="v1", allow_patterns=pats)),
    "main": hashes(snapshot_download({REPO!r})),
    "main_path": snapshot_download({REPO!r}),
}}
print(json.dumps(out))
""",
    )
    want_v1 = {p: sha256(d) for p, d in phi3["v1"].items() if p.endswith((".json", ".safetensors"))}
    assert result["sha"] == want_v1
    assert result["tag"] == want_v1
    assert result["main"] == {p: sha256(d) for p, d in phi3["v2"].items()}
    # the cache snapshot folder is named after the commit the server resolved main to
    assert os.path.basename(result["main_path"]) == phi3["sha2"]
    # LFS files went through the 302 → /_lfs/objects flow, regular ones were served directly
    assert hub_server.count("HEAD", r"/resolve/.*safetensors$") >= 4
    assert hub_server.count("GET", r"^/_lfs/objects/[0-9a-f]{64}$") >= 3
    assert not hub_server.errors and not hub_server.unhandled


def test_model_info_files_metadata_and_tree(hub_server, phi3):
    info = run_hf_json(
        hub_server,
        f"""
import json
from huggingface_hub import HfApi
api = HfApi()
mi = api.model_info({REPO!r}, revision="v1", files_metadata=True)
tree = list(api.list_repo_tree({REPO!r}, recursive=True, revision="v1"))
print(json.dumps({{
    "id": mi.id, "sha": mi.sha,
    "siblings": {{s.rfilename: [s.size, s.blob_id, s.lfs and s.lfs.sha256, s.lfs and s.lfs.size] for s in mi.siblings}},
    "tree": {{t.path: getattr(t, "lfs", None) and t.lfs.sha256 for t in tree}},
    "files": api.list_repo_files({REPO!r}),
}}))
""",
    )
    v1 = phi3["v1"]
    assert info["id"] == REPO and info["sha"] == phi3["sha1"]
    assert set(info["siblings"]) == set(v1)
    for path, (size, blob_id, lfs_sha, lfs_size) in info["siblings"].items():
        data = v1[path]
        assert size == len(data)
        if path.endswith((".safetensors", ".onnx")):
            assert (lfs_sha, lfs_size) == (sha256(data), len(data))
        else:
            assert lfs_sha is None and blob_id == git_blob_sha1(data)
    assert info["tree"]["onnx"] is None  # directory entry
    assert info["tree"]["onnx/model.onnx"] == sha256(v1["onnx/model.onnx"])
    assert sorted(info["files"]) == sorted(v1)


def test_upload_folder_skips_unchanged_and_uploads_only_changes(hub_server, tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    weights = os.urandom(2 * 1024 * 1024)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# bundle\n")
    upload = f"""
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("testuser/bundle", exist_ok=True)
info = api.upload_folder(repo_id="testuser/bundle", folder_path={str(folder)!r}, commit_message="up")
print(info.oid)
"""
    first = run_hf(hub_server, upload).stdout.split()[-1]
    files = hub_server.list_files("testuser/bundle")
    assert files["model.safetensors"].lfs and files["model.safetensors"].oid == sha256(weights)
    assert not files["config.json"].lfs and not files["README.md"].lfs
    assert ".gitattributes" in files  # create_repo makes an initial commit, like the Hub
    assert hub_server.read_file("testuser/bundle", "model.safetensors") == weights
    assert hub_server.head("testuser/bundle") == first
    small = len(b'{"a": 1}') + len((folder / "README.md").read_bytes())
    assert hub_server.bytes_uploaded == len(weights) + small
    assert hub_server.lfs_stores == {sha256(weights): 1}

    # same folder again: nothing is sent, no commit is made
    hub_server.reset_counters()
    second = run_hf(hub_server, upload).stdout.split()[-1]
    assert hub_server.bytes_uploaded == 0
    assert second == first and hub_server.count("POST", r"/commit/") == 0
    assert hub_server.count("PUT", r"^/_lfs/upload/") == 0

    # change only config.json: only its bytes go up, in a new commit
    hub_server.reset_counters()
    (folder / "config.json").write_text('{"a": 2, "b": 3}')
    third = run_hf(hub_server, upload).stdout.split()[-1]
    assert third != first and hub_server.head("testuser/bundle") == third
    assert hub_server.bytes_uploaded == len(b'{"a": 2, "b": 3}')
    assert hub_server.count("PUT", r"^/_lfs/upload/") == 0
    assert hub_server.read_file("testuser/bundle", "config.json") == b'{"a": 2, "b": 3}'
    assert hub_server.commit_count("testuser/bundle") == 3  # initial + 2 uploads
    assert not hub_server.errors and not hub_server.unhandled


def test_create_tag_and_list_refs(hub_server, phi3):
    hub_server.seed_repo("testuser/tagged", {"config.json": b"{}"})
    out = run_hf_json(
        hub_server,
        """
import json
from huggingface_hub import HfApi
api = HfApi()
api.create_tag("testuser/tagged", tag="v1.0", tag_message="first")
api.create_branch("testuser/tagged", branch="dev")
try:
    api.create_tag("testuser/tagged", tag="v1.0")
    dup = "no error"
except Exception as e:
    dup = type(e).__name__ + ":" + str(e.response.status_code)
api.create_tag("testuser/tagged", tag="v1.0", exist_ok=True)
refs = api.list_repo_refs("testuser/tagged")
print(json.dumps({
    "branches": {b.name: b.target_commit for b in refs.branches},
    "tags": {t.name: [t.ref, t.target_commit] for t in refs.tags},
    "converts": refs.converts, "dup": dup,
}))
""",
    )
    head = hub_server.head("testuser/tagged")
    assert out["tags"] == {"v1.0": ["refs/tags/v1.0", head]}
    assert out["branches"] == {"main": head, "dev": head}
    assert out["converts"] == [] and out["dup"] == "HfHubHTTPError:409"


ERRORS_SCRIPT = f"""
import json
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

def err(fn):
    try:
        fn()
        return "ok"
    except Exception as e:
        return type(e).__name__

api = HfApi()
print(json.dumps({{
    "info_missing_repo": err(lambda: api.model_info("nobody/nothing")),
    "download_missing_repo": err(lambda: hf_hub_download("nobody/nothing", "config.json")),
    "download_missing_rev": err(lambda: hf_hub_download({REPO!r}, "config.json", revision="nope")),
    "snapshot_missing_rev": err(lambda: snapshot_download({REPO!r}, revision="nope")),
    "info_missing_rev": err(lambda: api.model_info({REPO!r}, revision="f" * 40)),
    "download_missing_file": err(lambda: hf_hub_download({REPO!r}, "nope.json")),
    "download_gated": err(lambda: hf_hub_download("gated/model", "config.json")),
    "snapshot_gated": err(lambda: snapshot_download("gated/model")),
    "info_gated": err(lambda: api.model_info("gated/model").gated),
    "download_private": err(lambda: hf_hub_download("testuser/private", "config.json")),
}}))
"""


def test_typed_errors(hub_server, phi3):
    hub_server.seed_repo("gated/model", {"config.json": b"{}"}, gated=True)
    hub_server.seed_repo("testuser/private", {"config.json": b"{}"}, private=True)
    anon = run_hf_json(hub_server, ERRORS_SCRIPT, token=None)
    assert anon == {
        "info_missing_repo": "RepositoryNotFoundError",
        "download_missing_repo": "RepositoryNotFoundError",
        "download_missing_rev": "RevisionNotFoundError",
        "snapshot_missing_rev": "RevisionNotFoundError",
        "info_missing_rev": "RevisionNotFoundError",
        "download_missing_file": "RemoteEntryNotFoundError",
        "download_gated": "GatedRepoError",
        "snapshot_gated": "GatedRepoError",
        "info_gated": "ok",  # metadata of a gated repo is readable, its files are not
        "download_private": "RepositoryNotFoundError",
    }
    authed = run_hf_json(hub_server, ERRORS_SCRIPT)
    assert authed == {**anon, "download_private": "ok"}


def test_wrong_token_is_rejected(hub_server, phi3):
    out = run_hf_json(
        hub_server,
        f"""
import json
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
api = HfApi()
res = {{}}
for name, fn in {{
    "whoami": lambda: api.whoami(),
    "create_repo": lambda: api.create_repo("testuser/x"),
    "model_info": lambda: api.model_info({REPO!r}),
}}.items():
    try:
        fn()
        res[name] = "ok"
    except HfHubHTTPError as e:
        res[name] = [type(e).__name__, e.response.status_code, "Invalid" in str(e)]
print(json.dumps(res))
""",
        token="hf_wrong",
    )
    assert out["create_repo"] == ["HfHubHTTPError", 401, True]
    assert out["model_info"] == ["HfHubHTTPError", 401, True]
    assert out["whoami"][1] == 401
    assert not hub_server.repo_exists("testuser/x")
    # and the right token works
    who = run_hf_json(hub_server, "import json; from huggingface_hub import HfApi; print(json.dumps(HfApi().whoami()))")
    assert who["name"] == "testuser"


def test_preupload_500_is_retried(hub_server, tmp_path):
    hub_server.seed_repo("testuser/retry", {"README.md": b"# hi\n"})
    (tmp_path / "w.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "config.json").write_text("{}")
    hub_server.fail_next("POST", r"/preupload/", status=500, times=1)
    run_hf(
        hub_server,
        f"""
from huggingface_hub import HfApi
HfApi().upload_folder(repo_id="testuser/retry", folder_path={str(tmp_path)!r})
""",
    )
    assert hub_server.count("POST", r"^/api/models/testuser/retry/preupload/main$") == 2
    files = hub_server.list_files("testuser/retry")
    assert files["w.safetensors"].lfs and files["w.safetensors"].oid == sha256(b"x" * 1000)
    assert hub_server.read_file("testuser/retry", "config.json") == b"{}"


CUT_UPLOAD = """
import time
time.sleep = lambda *_: None  # skip the client's 1..8 s retry back-off; the retry logic itself is untouched
from huggingface_hub import HfApi
HfApi().upload_folder(repo_id="testuser/cut", folder_path={folder!r})
print("uploaded")
"""


def test_interrupted_lfs_upload_then_rerun(hub_server, tmp_path):
    hub_server.seed_repo("testuser/cut", {"README.md": b"# cut\n"})
    weights = os.urandom(3 * 1024 * 1024)
    (tmp_path / "model.safetensors").write_bytes(weights)
    (tmp_path / "config.json").write_text("{}")
    script = CUT_UPLOAD.format(folder=str(tmp_path))

    # every attempt the client makes (1 + 5 retries) is cut halfway → upload_folder fails, nothing committed
    hub_server.cut_next_upload(times=6)
    failed = run_hf(hub_server, script, check=False)
    assert failed.returncode != 0, failed.stdout
    assert hub_server.count("PUT", r"^/_lfs/upload/") == 6
    assert not hub_server.has_lfs_object(sha256(weights))
    assert "model.safetensors" not in hub_server.list_files("testuser/cut")

    rerun = run_hf(hub_server, script)
    assert "uploaded" in rerun.stdout
    assert hub_server.lfs_stores == {sha256(weights): 1}
    assert hub_server.read_file("testuser/cut", "model.safetensors") == weights
    assert hub_server.count("PUT", r"^/_lfs/upload/") == 7


def test_single_cut_is_retried_by_client(hub_server, tmp_path):
    hub_server.seed_repo("testuser/cut", {"README.md": b"# cut\n"})
    weights = os.urandom(1024 * 1024)
    (tmp_path / "model.safetensors").write_bytes(weights)
    hub_server.cut_next_upload()
    run_hf(hub_server, CUT_UPLOAD.format(folder=str(tmp_path)))
    assert hub_server.count("PUT", r"^/_lfs/upload/") == 2
    assert hub_server.lfs_stores == {sha256(weights): 1}
    assert hub_server.read_file("testuser/cut", "model.safetensors") == weights


# ---- protocol details checked with plain httpx (no huggingface_hub import needed) ----------------------------


def test_http_details(hub_server):
    data = os.urandom(5000)
    sha = hub_server.seed_repo("testuser/raw", {"a.txt": b"hello world", "w.bin": data})
    auth = {"Authorization": f"Bearer {hub_server.token}"}
    with httpx.Client(base_url=hub_server.url, trust_env=False) as c:
        r = c.head("/testuser/raw/resolve/main/a.txt")
        assert r.status_code == 200 and r.headers["X-Repo-Commit"] == sha
        assert r.headers["ETag"] == f'"{git_blob_sha1(b"hello world")}"' and r.headers["Content-Length"] == "11"
        r = c.get("/testuser/raw/resolve/main/a.txt", headers={"Range": "bytes=6-"})
        assert r.status_code == 206 and r.content == b"world" and r.headers["Content-Range"] == "bytes 6-10/11"
        r = c.get("/testuser/raw/resolve/main/a.txt", headers={"Range": "bytes=50-"})
        assert r.status_code == 416

        r = c.head(f"/testuser/raw/resolve/{sha}/w.bin")
        assert r.status_code == 302 and r.headers["Location"] == f"{hub_server.url}/_lfs/objects/{sha256(data)}"
        assert r.headers["X-Linked-Etag"] == f'"{sha256(data)}"' and r.headers["X-Linked-Size"] == "5000"
        r = c.get("/testuser/raw/resolve/main/w.bin", follow_redirects=True, headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == data[-10:]

        r = c.head("/testuser/raw/resolve/main/missing.txt")
        assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound"
        assert r.headers["X-Repo-Commit"] == sha

        # writes need the token; a wrong token is rejected everywhere
        assert c.post("/api/repos/create", json={"name": "x"}).status_code == 401
        r = c.get("/api/models/testuser/raw", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"

        # 409 on create carries the url (create_repo(exist_ok=True) reads it)
        r = c.post("/api/repos/create", json={"name": "raw", "organization": None}, headers=auth)
        assert r.status_code == 409 and r.json()["url"] == f"{hub_server.url}/testuser/raw"

        # LFS: batch offers an upload for unknown objects; the PUT checks the hash; the commit checks the object
        blob = b"z" * 100
        oid = sha256(blob)
        batch = {"operation": "upload", "objects": [{"oid": oid, "size": 100}], "hash_algo": "sha256"}
        r = c.post("/testuser/raw.git/info/lfs/objects/batch", json=batch, headers=auth)
        href = r.json()["objects"][0]["actions"]["upload"]["href"]
        commit = (
            json.dumps({"key": "header", "value": {"summary": "s"}})
            + "\n"
            + json.dumps({"key": "lfsFile", "value": {"path": "z.bin", "algo": "sha256", "oid": oid, "size": 100}})
        )
        r = c.post("/api/models/testuser/raw/commit/main", content=commit, headers=auth)
        assert r.status_code == 422
        assert c.put(href, content=b"y" * 100).status_code == 400
        assert c.put(href, content=blob).status_code == 200
        r = c.post("/testuser/raw.git/info/lfs/objects/batch", json=batch, headers=auth)
        assert "actions" not in r.json()["objects"][0]
        r = c.post("/api/models/testuser/raw/commit/main", content=commit, headers=auth)
        assert r.status_code == 200 and r.json()["commitOid"] == hub_server.head("testuser/raw")
        assert hub_server.read_file("testuser/raw", "z.bin") == blob

        # fault injection answers matching requests, then stops
        hub_server.fail_next("GET", r"^/api/models/testuser/raw$", status=503, times=2)
        assert [c.get("/api/models/testuser/raw").status_code for _ in range(3)] == [503, 503, 200]
    assert not hub_server.errors and not hub_server.unhandled


def test_server_is_standalone(tmp_path):
    """Usable without fixtures; a root we pass is left in place, a temporary one is removed on stop."""
    with HubServer(root=tmp_path / "r") as server:
        server.seed_repo("testuser/s", {"a.txt": "x"})
        with httpx.Client(trust_env=False) as c:
            assert c.get(f"{server.url}/api/models/testuser/s").json()["id"] == "testuser/s"
    assert (tmp_path / "r" / "git").is_dir()
    server = HubServer().start()
    root = server.root
    server.stop()
    assert not root.exists()
