"""The download stage against a local directory, the local Hub-protocol server, and the Hub cache offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aipc.pipeline.errors import SourceError
from aipc.pipeline.fsutil import sha256_file

try:
    from .faults import assert_refused
    from .hubserver import hf_env
except ImportError:
    from faults import assert_refused
    from hubserver import hf_env

ROOT = Path(__file__).resolve().parent.parent
REPO = "microsoft/Phi-3-mini-4k-instruct"


def write_params(ws: Path, model: dict) -> None:
    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["model"] = model
    (ws / "params.yaml").write_text(yaml.safe_dump(data))


def aipc(ws: Path, env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(env)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "aipc", *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=timeout)


def seed(server, tiny: Path, extra: dict | None = None) -> str:
    files = {p.name: p for p in tiny.iterdir() if p.is_file()}
    files["LICENSE"] = b"MIT License\n"
    # things the download must never take: pickled weights and remote code
    files["pytorch_model.bin"] = b"\x80\x04pickle"
    files["modeling_phi3.py"] = b"raise SystemExit('remote code must not run')\n"
    files["README.md"] = b"# card\n"
    files.update(extra or {})
    return server.seed_repo(REPO, files)


@pytest.fixture
def ws(tmp_path):
    d = tmp_path / "ws"
    d.mkdir()
    return d


def hub_model(revision: str) -> dict:
    return {"name": "phi-3-mini-4k-instruct", "source": "hub", "repo_id": REPO, "revision": revision}


def test_hub_download_pinned_records_commit_and_sha256(hub_server, tiny_phi3, ws, tmp_path):
    sha = seed(hub_server, tiny_phi3)
    write_params(ws, hub_model(sha))
    r = aipc(ws, hf_env(hub_server, hf_home=tmp_path / "hf"), "download")
    assert r.returncode == 0, r.stderr
    src = ws / "artifacts" / "source"
    names = sorted(p.name for p in src.iterdir())
    assert "model.safetensors" in names and "LICENSE" in names and "tokenizer.json" in names
    assert "pytorch_model.bin" not in names and "modeling_phi3.py" not in names and "README.md" not in names
    rec = json.loads((src / "source.json").read_text())
    assert rec["commit"] == sha and rec["pinned"] is True and rec["repo_id"] == REPO
    assert "model.safetensors" in rec["lfs_sha256_verified"]
    for name, meta in rec["files"].items():
        assert meta["sha256"] == sha256_file(src / name)
    assert rec["files"]["model.safetensors"]["sha256"] == sha256_file(tiny_phi3 / "model.safetensors")
    assert hub_server.token not in r.stderr + r.stdout, "the token must never be logged"
    assert not [p for p in (ws / "artifacts").iterdir() if p.name.startswith(".")], "no temp dirs left"


def test_branch_revision_warns_and_records_resolved_commit(hub_server, tiny_phi3, ws, tmp_path):
    sha = seed(hub_server, tiny_phi3)
    write_params(ws, hub_model("main"))
    r = aipc(ws, hf_env(hub_server, hf_home=tmp_path / "hf"), "download")
    assert r.returncode == 0, r.stderr
    assert "not pinned" in r.stderr
    assert json.loads((ws / "artifacts/source/source.json").read_text())["commit"] == sha


def test_offline_from_warm_cache_then_cold_cache_fails_fast(hub_server, tiny_phi3, ws, tmp_path):
    sha = seed(hub_server, tiny_phi3)
    write_params(ws, hub_model(sha))
    hf_home = tmp_path / "hf"
    assert aipc(ws, hf_env(hub_server, hf_home=hf_home), "download").returncode == 0
    (ws / "artifacts").rename(tmp_path / "first")
    hub_server.stop()  # the Hub is gone: the cache must suffice
    env = hf_env(hub_server, hf_home=hf_home, extra_env={"HF_HUB_OFFLINE": "1"})
    r = aipc(ws, env, "download")
    assert r.returncode == 0, r.stderr
    rec = json.loads((ws / "artifacts/source/source.json").read_text())
    assert rec["commit"] == sha and "model.safetensors" in rec["lfs_sha256_verified"]
    # a cold cache offline: one clear error, in seconds, nothing left behind
    (ws / "artifacts").rename(tmp_path / "second")
    env = hf_env(hub_server, hf_home=tmp_path / "cold", extra_env={"HF_HUB_OFFLINE": "1"})
    t0 = time.perf_counter()
    r = aipc(ws, env, "download")
    assert r.returncode == 4, r.stderr
    assert time.perf_counter() - t0 < 15
    assert "cannot reach the Hugging Face Hub" in r.stderr and "not in the local cache" in r.stderr
    assert "HF_HUB_OFFLINE" in r.stderr and "model.source: local" in r.stderr and "demo" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (ws / "artifacts" / "source").exists()


def test_unreachable_hub_is_one_clear_error(ws, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_params(ws, hub_model("0" * 40))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
               NO_PROXY="127.0.0.1")
    t0 = time.perf_counter()
    r = aipc(ws, env, "download")
    assert_refused(r, "env-hub-unreachable")
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize("case", ["bad_token", "gated", "missing_repo", "missing_revision", "bin_only", "not_phi3"])
def test_hub_errors_are_clear(case, hub_server, tiny_phi3, ws, tmp_path):
    sha = seed(hub_server, tiny_phi3)
    model = hub_model(sha)
    token = hub_server.token
    expect = {
        "bad_token": "refused the token",
        "gated": "is gated",
        "missing_repo": "repository not found",
        "missing_revision": "does not exist",
        "bin_only": "no safetensors weights",
        "not_phi3": "is not a Phi-3 checkpoint",
    }[case]
    if case == "bad_token":
        token = "hf_wrong"
    elif case == "gated":
        hub_server.set_repo(REPO, gated="manual")
    elif case == "missing_repo":
        model["repo_id"] = "microsoft/nope"
    elif case == "missing_revision":
        model["revision"] = "f" * 40
    elif case == "bin_only":
        model["repo_id"] = "someone/bin-only"
        model["revision"] = hub_server.seed_repo("someone/bin-only", {"config.json": (tiny_phi3 / "config.json"),
                                                                      "pytorch_model.bin": b"x" * 100})
    elif case == "not_phi3":
        cfg = json.loads((tiny_phi3 / "config.json").read_text())
        cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
        model["revision"] = seed(hub_server, tiny_phi3, {"config.json": json.dumps(cfg).encode()})
    write_params(ws, model)
    r = aipc(ws, hf_env(hub_server, token=token, hf_home=tmp_path / "hf"), "download")
    assert r.returncode in (3, 4), r.stderr
    assert expect in r.stderr, r.stderr
    if case in ("bad_token", "gated"):
        assert_refused(r, {"bad_token": "env-bad-token", "gated": "env-gated"}[case])
    assert "fix:" in r.stderr and "Traceback" not in r.stderr
    assert token not in r.stderr
    assert not (ws / "artifacts" / "source").exists()


def test_corrupt_cached_blob_is_refused(hub_server, tiny_phi3, ws, tmp_path):
    sha = seed(hub_server, tiny_phi3)
    write_params(ws, hub_model(sha))
    hf_home = tmp_path / "hf"
    assert aipc(ws, hf_env(hub_server, hf_home=hf_home), "download").returncode == 0
    blob = next(p for p in (hf_home / "hub").rglob("blobs/*") if p.stat().st_size > 1_000_000 and len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    env = hf_env(hub_server, hf_home=hf_home, extra_env={"HF_HUB_OFFLINE": "1"})
    r = aipc(ws, env, "download")
    assert_refused(r, "model-sha256")
    assert "sha256" in r.stderr
    # the previous good artifact is untouched
    assert json.loads((ws / "artifacts/source/source.json").read_text())["commit"] == sha


def test_local_source_and_its_checks(tiny_phi3, tmp_path):
    from aipc.pipeline.config import LocalSource
    from aipc.pipeline.sources import materialize

    rec = materialize(LocalSource(name="t", source="local", path=str(tiny_phi3)), tmp_path / "out")
    assert rec["source"] == "local" and "model.safetensors" in rec["files"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in tiny_phi3.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "tokenizer.json").unlink()
    with pytest.raises(SourceError, match="no tokenizer"):
        materialize(LocalSource(name="t", source="local", path=str(broken)), tmp_path / "o2")
    (broken / "tokenizer.json").write_bytes((tiny_phi3 / "tokenizer.json").read_bytes())
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(SourceError, match="truncated"):
        materialize(LocalSource(name="t", source="local", path=str(broken)), tmp_path / "o3")
    w.unlink()
    (broken / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(SourceError, match="only pickled weights: pytorch_model.bin"):
        materialize(LocalSource(name="t", source="local", path=str(broken)), tmp_path / "o4")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()
    with pytest.raises(SourceError, match="not a directory"):
        materialize(LocalSource(name="t", source="local", path=str(tmp_path / "nope")), tmp_path / "o5")
