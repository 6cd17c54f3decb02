"""Bundles (manifest, model card) and `aipc publish` / `aipc verify` against the local Hub-protocol server.

Bundles are built from small real artifacts: the tiny Phi-3 checkpoint exported with the real OpenVINO
(int4) and ORT GenAI (cpu-int4) code into a temp workspace, plus smoke/validate metrics files. Publishing
runs `python -m stages ...` (and scripts/release.sh) in subprocesses, because huggingface_hub reads
HF_ENDPOINT at import time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aipc.pipeline.errors import ConfigError
from aipc.pipeline.fsutil import file_table, read_json, sha256_file, write_json
from aipc.pipeline.records import NPUExportRecord, SmokeRecord, ValidateRecord

try:
    from .hubserver import hf_env
except ImportError:
    from hubserver import hf_env

ROOT = Path(__file__).resolve().parent.parent
SOURCE_REPO = "microsoft/Phi-3-mini-4k-instruct"
SOURCE_COMMIT = "0a67737cc96d2554230f90338b163bc6380a2a85"
MODEL = "phi-3-mini-4k-instruct"
OV_REPO = f"testuser/{MODEL}-openvino-int4"
ORT_REPO = f"testuser/{MODEL}-ortgenai-cpu-int4"
MIT = ("MIT License\n\nCopyright (c) Microsoft Corporation.\n\nPermission is hereby granted, free of charge, to any "
       "person obtaining a copy of this software...\n")


def release_params() -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["model"] = {"name": MODEL, "source": "hub", "repo_id": SOURCE_REPO, "revision": SOURCE_COMMIT}
    data["openvino"]["variants"] = {"int4": {"weight_format": "int4", "group_size": 64, "ratio": 1.0, "sym": True}}
    data["ortgenai"]["variants"] = {"cpu-int4": {"precision": "int4", "execution_provider": "cpu", "block_size": 32,
                                                 "accuracy_level": 4, "is_symmetric": True}}
    data["npu"]["variants"] = {}
    data["validation"]["gates"]["variants"] = {}
    data["publish"] = {"org": "testuser", "repo_template": "{org}/{model}-{backend}-{variant}", "private": False,
                       "tag": None}
    return data


def smoke_record(backend: str, passed: bool = True) -> dict:
    """A whole smoke record (pipeline.records.SmokeRecord), as the smoke stage writes it."""
    def result(id_: str, text: str, ok: bool, failures: list[str], messages: list[dict]) -> dict:
        return {"id": id_, "messages": messages, "text": text, "new_tokens": 2, "token_ids": [1, 2],
                "stopped_by": "eos", "repeated_4gram_ratio": 0.0, "first_token_s": 0.05, "tokens_per_s": 20.0,
                "failures": failures, "passed": ok, "notes": []}

    results = [result("capital", "Paris.", True, [], [{"role": "user", "content": "What is the capital of France?"}]),
               result("arith", "4", passed, [] if passed else ["empty output"], [{"role": "user", "content": "2+2?"}])]
    # what each runner records: OpenVINO its device and properties (the precision pin among them)
    runtime = ({"device": "CPU", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
               if backend == "openvino" else {})
    return SmokeRecord.model_validate(
        {"backend": backend, "artifact": f"artifacts/{backend}/x", "passed": passed,
         "prompts_passed": sum(r["passed"] for r in results), "prompts_total": 2, "max_new_tokens": 48,
         "runtime": runtime, "results": results, "must_pass": True}).dump()


def validate_record(backend: str, variant: str, top1: float = 0.93) -> dict:
    """A whole validate record (pipeline.records.ValidateRecord), as the validate stage writes it."""
    gates = [{"gate": "max_ppl_ratio", "metric": "accuracy.worst_ppl_ratio", "op": "<=", "threshold": 1.6,
              "value": 1.08, "passed": True},
             {"gate": "min_top1_agreement", "metric": "accuracy.top1_agreement", "op": ">=", "threshold": 0.7,
              "value": top1, "passed": top1 >= 0.7}]
    return ValidateRecord.model_validate(
        {"backend": backend, "variant": variant, "artifact": f"artifacts/{backend}/{variant}", "protocol": {},
         "texts": {}, "accuracy": {"worst_ppl_ratio": 1.08, "top1_agreement": top1, "kl_mean": 0.05},
         "tokenizer_parity": {"encode_agreement": 1.0, "roundtrip_exact": 1.0, "chat_template_equal": True},
         "smoke": {"passed": True, "prefix_agreement": 1.0, "file": f"metrics/smoke/{backend}-{variant}.json"},
         "gates": gates, "passed": all(g["passed"] for g in gates)}).dump()


def make_source(src: Path, tiny: Path) -> None:
    src.mkdir(parents=True)
    for p in tiny.iterdir():
        if p.is_file():
            shutil.copyfile(p, src / p.name)
    (src / "LICENSE").write_text(MIT)
    (src / "NOTICE.md").write_text("Phi-3 notices.\n")
    write_json(src / "source.json", {"source": "hub", "repo_id": SOURCE_REPO, "revision": SOURCE_COMMIT,
                                     "commit": SOURCE_COMMIT, "pinned": True, "name": MODEL,
                                     "lfs_sha256_verified": ["model.safetensors"],
                                     "files": file_table(src)})


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_phi3) -> Path:
    """A workspace with source, two real artifacts, metrics and their bundles (built once per module)."""
    from aipc.pipeline.config import parse_params
    from aipc.pipeline.export import openvino, ortgenai, run_base
    from aipc.pipeline.package import build_bundle

    ws = tmp_path_factory.mktemp("publish") / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text(yaml.safe_dump(release_params(), sort_keys=False))
    params = parse_params(release_params())
    make_source(ws / "artifacts/source", tiny_phi3)
    run_base(params, ws / "artifacts/source", ws / "artifacts/openvino-base")
    openvino.export(params, "int4", ws / "artifacts/source", ws / "artifacts/openvino/int4",
                    base_dir=ws / "artifacts/openvino-base")
    ortgenai.export(params, "cpu-int4", ws / "artifacts/source", ws / "artifacts/ortgenai/cpu-int4")
    write_json(ws / "metrics/smoke/openvino-int4.json", smoke_record("openvino"))
    write_json(ws / "metrics/smoke/ortgenai-cpu-int4.json", smoke_record("ortgenai"))
    write_json(ws / "metrics/validate/openvino-int4.json", validate_record("openvino", "int4"))
    for backend, variant in (("openvino", "int4"), ("ortgenai", "cpu-int4")):
        build_bundle(params, backend, variant, ws)
    return ws


@pytest.fixture
def ws(built, tmp_path) -> Path:
    """A private copy of the built workspace (tests may change or tamper with it)."""
    dest = tmp_path / "ws"
    shutil.copytree(built, dest, symlinks=True)
    return dest


def aipc(ws: Path, env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(env)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "aipc", *args], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def release(ws: Path, env: dict, **extra: str) -> subprocess.CompletedProcess:
    env = dict(env)
    env.update(AIPC_SKIP_SETUP="1", AIPC_SKIP_REPRO="1", PYTHONPATH=str(ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra)
    return subprocess.run(["bash", str(ROOT / "scripts" / "release.sh"), str(ws)], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def bundle(ws: Path, name: str) -> Path:
    return ws / "artifacts" / "bundles" / name


def assert_repo_equals_bundle(server, repo: str, folder: Path, revision: str = "main") -> None:
    remote = {p: e for p, e in server.list_files(repo, revision).items() if p != ".gitattributes"}
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(remote) == local
    for path in local:
        assert server.read_file(repo, path, revision) == (folder / path).read_bytes(), path


def commit_title(server, repo: str, revision: str = "main") -> str:
    r = server._repos[("model", repo)]
    return r.commits[server.head(repo, revision)].title


def clean(server) -> None:
    assert server.errors == [] and server.unhandled == [], (server.errors, server.unhandled)


# --------------------------------------------------------------------------- bundle contents


def test_manifest_is_deterministic_and_complete(built, tmp_path):
    from aipc.pipeline.config import parse_params
    from aipc.pipeline.package import build_bundle

    params = parse_params(release_params())
    again = build_bundle(params, "openvino", "int4", built, out_dir=tmp_path / "again")
    first = bundle(built, "openvino-int4")
    assert (again / "manifest.json").read_bytes() == (first / "manifest.json").read_bytes()
    assert (again / "README.md").read_bytes() == (first / "README.md").read_bytes()
    m = read_json(first / "manifest.json")
    assert m["schema"] == "aipc-bundle/1" and m["repo_id"] == OV_REPO
    assert m["source"]["repo_id"] == SOURCE_REPO and m["source"]["commit"] == SOURCE_COMMIT
    assert m["source"]["license"] == "mit" and m["source"]["license_from"] == "source LICENSE file"
    assert m["quantization"]["params"]["group_size"] == 64
    assert m["quantization"]["effective"]["int4_group_sizes"] == {"64": 8}
    assert {"python", "openvino", "optimum-intel", "nncf", "transformers", "torch"} <= set(m["toolchain"])
    assert m["min_runtime"]["openvino"] == m["toolchain"]["openvino"]
    assert m["validation"]["smoke"]["passed"] and m["validation"]["validate"]["passed"]
    assert m["validation"]["smoke"]["runtime"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert m["pickle_files"] == []
    assert m["validation"]["smoke"]["example"] == {"id": "capital", "text": "Paris.", "messages": [
        {"role": "user", "content": "What is the capital of France?"}]} and m["validation"]["smoke"]["max_new_tokens"] == 48
    # the source's config.json byte for byte (optimum writes transformers 5's rewrite of it), in every bundle
    for name in ("openvino-int4", "ortgenai-cpu-int4"):
        assert (bundle(built, name) / "config.json").read_bytes() == (built / "artifacts/source/config.json").read_bytes()
    # every file but manifest.json and the signature over both, with its sha256 and size; the artifact files,
    # license files, the card and the signing key's public half
    files = {p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()} - {"manifest.json", "model.sig"}
    assert set(m["files"]) == files
    assert {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "aipc_export.json",
            "LICENSE", "NOTICE.md", "README.md", "signing-key.pub.pem"} <= files
    assert m["signature"]["fingerprint"].startswith("sha256:") and m["signature"]["key"] == "development"
    assert m["build"]["code_commit"]  # built outside DVC here: no dvc.lock record, the code's commit only
    for name, meta in m["files"].items():
        assert meta == {"sha256": sha256_file(first / name), "size": (first / name).stat().st_size}
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", json.dumps(m)), "no timestamps"
    ort = read_json(bundle(built, "ortgenai-cpu-int4") / "manifest.json")
    from aipc.pipeline.export.ortgenai import MIN_RUNTIME

    assert ort["min_runtime"] == MIN_RUNTIME and "validate" not in ort["validation"]
    assert ort["library_name"] == "onnxruntime-genai"


def test_card_front_matter_and_sections(built):
    text = (bundle(built, "openvino-int4") / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["license"] == "mit" and meta["base_model"] == SOURCE_REPO
    assert meta["base_model_relation"] == "quantized" and meta["pipeline_tag"] == "text-generation"
    # library_name only from the Hub's list of modeling libraries, which has no OpenVINO: a tag instead
    assert "library_name" not in meta and {"openvino", "int4", "phi3"} <= set(meta["tags"])
    for needle in (f'path = hf.snapshot_download("{OV_REPO}")  # a local copy of this bundle instead: path = ',
                   'ov_genai.LLMPipeline(path, "CPU", INFERENCE_PRECISION_HINT="f32")',
                   "print(pipe.generate('What is the capital of France?', max_new_tokens=48, do_sample=False))",
                   'OVModelForCausalLM.from_pretrained(path, ov_config={"INFERENCE_PRECISION_HINT": "f32"})',
                   "Output: the greedy answer the smoke stage recorded (on CPU):\n\n```text\nParis.\n```",
                   "apply_chat_template([{'role': 'user', 'content': 'What is the capital of France?'}], ",
                   "the CPU precision the validation below was measured at", "| group_size | 64 |",
                   "min_top1_agreement", "| smoke generation", "## Known limits", "## Minimum runtime versions",
                   f"{SOURCE_REPO}@{SOURCE_COMMIT}", "`NOTICE.md`"):
        assert needle in text, needle
    ort = (bundle(built, "ortgenai-cpu-int4") / "README.md").read_text()
    meta = yaml.safe_load(ort.split("---\n", 2)[1])
    assert "library_name" not in meta and {"onnx", "onnxruntime-genai"} <= set(meta["tags"])
    from aipc.pipeline.export.ortgenai import MIN_RUNTIME

    assert f'path = hf.snapshot_download("{ORT_REPO}")' in ort and "config = og.Config(path)" in ort
    assert "clear_providers" not in ort  # a CPU build: its own provider is the CPU
    assert f'"onnxruntime-genai>={MIN_RUNTIME["onnxruntime-genai"]}"' in ort
    assert "no accuracy gates were recorded" in ort


def test_card_precision_hint_only_for_a_pinned_cpu_run():
    from aipc.pipeline.package.card import _validated_precision

    def m(runtime):
        return {"validation": {"smoke": {"runtime": runtime}}} if runtime is not None else {"validation": {}}

    assert _validated_precision(m({"device": "CPU", "INFERENCE_PRECISION_HINT": "f32"}), "CPU") == "f32"
    assert _validated_precision(m({"device": "CPU", "INFERENCE_PRECISION_HINT": "f32"}), "NPU") is None
    assert _validated_precision(m({"device": "GPU", "INFERENCE_PRECISION_HINT": "f16"}), "CPU") is None
    assert _validated_precision(m({"device": "CPU"}), "CPU") is None  # precision left to OpenVINO: no hint
    assert _validated_precision(m(None), "CPU") is None  # a manifest from before the runtime was recorded


def test_license_detection_and_embedded_provenance(tmp_path):
    from aipc.pipeline.config import parse_params
    from aipc.pipeline.package.manifest import _license_from_text, detect_license

    params = parse_params(release_params())
    assert _license_from_text("  Apache License\n  Version 2.0, January 2004\n") == "apache-2.0"
    assert _license_from_text(MIT) == "mit" and _license_from_text("All rights reserved.") is None
    assert detect_license(params, {"provenance": {"license": "apache-2.0"}}, tmp_path) == \
        ("apache-2.0", "source.json provenance")
    assert detect_license(params, {}, tmp_path) == (None, "unknown")
    data = release_params()
    data["bundle"] = {"license": "llama3", "base_model": None}
    assert detect_license(parse_params(data), {"provenance": {"license": "mit"}}, tmp_path)[0] == "llama3"


@pytest.mark.parametrize("template,needle", [
    ("{org}/{name}-{variant}", "unknown placeholder {name}"),
    ("{org}/{model}-{variant}", "add {backend}"),
    ("{org}/{model}-{backend}", "must contain {variant}"),
    ("{org}{model}-{backend}-{variant}", "not a Hub repo id"),
])
def test_repo_template_is_validated(template, needle):
    from aipc.pipeline.config import parse_params

    data = release_params()
    data["openvino"]["variants"]["cpu-int4"] = {"weight_format": "fp16"}  # same variant name as ORT's
    data["publish"]["repo_template"] = template
    with pytest.raises(ConfigError) as err:
        parse_params(data)
    assert needle in str(err.value) and "publish.repo_template" in str(err.value)


# --------------------------------------------------------------------------- publish / verify


def test_release_script_publishes_every_bundle_then_republish_uploads_nothing(hub_server, ws):
    env = hf_env(hub_server)
    r = release(ws, env, AIPC_RELEASE_TAG="v1")
    assert r.returncode == 0, r.stderr + r.stdout
    for repo, name in ((OV_REPO, "openvino-int4"), (ORT_REPO, "ortgenai-cpu-int4")):
        assert_repo_equals_bundle(hub_server, repo, bundle(ws, name))
        assert hub_server.commit_count(repo) == 2  # the repo's initial commit + ONE bundle commit
        assert SOURCE_COMMIT in commit_title(hub_server, repo)
        assert hub_server.head(repo, "v1") == hub_server.head(repo)
        assert f"{hub_server.url}/{repo}" in r.stdout
    assert hub_server.token not in r.stdout + r.stderr
    assert all(n == 1 for n in hub_server.lfs_stores.values())
    clean(hub_server)

    heads = {repo: hub_server.head(repo) for repo in (OV_REPO, ORT_REPO)}
    hub_server.reset_counters()
    r = release(ws, env, AIPC_RELEASE_TAG="v1")
    assert r.returncode == 0, r.stderr
    assert hub_server.bytes_uploaded == 0 and hub_server.lfs_stores == {}
    assert hub_server.count("PUT", "/_lfs/") == 0 and hub_server.count("POST", "/commit/") == 0
    assert {repo: hub_server.head(repo) for repo in heads} == heads
    assert r.stdout.count("nothing uploaded") == 2 and "tag v1 already on" in r.stdout


def test_one_changed_file_uploads_only_that_file_and_the_manifest(hub_server, ws):
    from aipc.pipeline.config import parse_params
    from aipc.pipeline.package import build_bundle

    env = hf_env(hub_server)
    assert aipc(ws, env, "publish", str(bundle(ws, "openvino-int4")), "--tag", "v1").returncode == 0
    # change one artifact file, rebuild the bundle (its manifest and card list the new sha256)
    gen = ws / "artifacts/openvino/int4/generation_config.json"
    data = read_json(gen)
    data["max_length"] = 1234
    gen.unlink()  # the bundle holds a hard link; never write through it
    write_json(gen, data)
    build_bundle(parse_params(release_params()), "openvino", "int4", ws)
    folder = bundle(ws, "openvino-int4")
    hub_server.reset_counters()
    r = aipc(ws, env, "publish", str(folder), "--dry-run")
    assert r.returncode == 0 and "change    generation_config.json" in r.stdout, r.stdout
    refused = aipc(ws, env, "publish", str(folder), "--tag", "v1")
    assert refused.returncode == 8 and "tag v1 already names commit" in refused.stderr, refused.stderr
    r = aipc(ws, env, "publish", str(folder), "--tag", "v2")
    assert r.returncode == 0, r.stderr
    changed = {"generation_config.json", "manifest.json", "README.md", "model.sig"}
    assert hub_server.count("PUT", "/_lfs/") == 0 and hub_server.count("POST", "/commit/") == 1
    assert hub_server.bytes_uploaded == sum((folder / p).stat().st_size for p in changed)
    before, after = hub_server.list_files(OV_REPO, "v1"), hub_server.list_files(OV_REPO, "v2")
    assert {p for p in after if before.get(p) != after[p]} == changed
    assert_repo_equals_bundle(hub_server, OV_REPO, folder)
    clean(hub_server)


def test_download_and_verify_round_trip_and_a_corrupted_repo(hub_server, ws, tmp_path):
    env = hf_env(hub_server)
    assert aipc(ws, env, "publish", "--all", "--tag", "v1").returncode == 0
    for repo, name in ((OV_REPO, "openvino-int4"), (ORT_REPO, "ortgenai-cpu-int4")):
        r = aipc(tmp_path, hf_env(hub_server, token=None), "verify", repo, "--revision", "v1")
        assert r.returncode == 0, r.stderr
        assert "every sha256 matches" in r.stdout
        assert_repo_equals_bundle(hub_server, repo, bundle(ws, name), "v1")
    hub_server.seed_repo(OV_REPO, {"openvino_model.xml": b"<net/>"}, message="tampered")
    r = aipc(tmp_path, env, "verify", OV_REPO)
    assert r.returncode == 8 and "openvino_model.xml" in r.stderr and "does not match" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = aipc(tmp_path, env, "verify", "testuser/nope")
    assert r.returncode == 8 and "no such repo" in r.stderr
    # the Hub's stored copy damaged under a commit that records the right sha256: publish sees nothing to do
    # (the tree it compares is right), so verify says so instead of sending the user to re-publish
    name, entry = max(((p, e) for p, e in hub_server.list_files(ORT_REPO, "v1").items() if e.lfs),
                      key=lambda pe: pe[1].size)
    blob = hub_server.lfs_path(entry.oid)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = aipc(tmp_path, env, "verify", ORT_REPO, "--revision", "v1")
    assert r.returncode == 8 and name in r.stderr and "stored copy is damaged" in r.stderr, r.stderr
    assert "re-publishing cannot repair it" in r.stderr and "Traceback" not in r.stderr
    p = aipc(ws, env, "publish", str(bundle(ws, "ortgenai-cpu-int4")), "--dry-run")
    assert p.returncode == 0 and "to upload: 0 file(s)" in p.stdout, p.stdout  # what verify's message explains
    clean(hub_server)


def test_bad_token_is_one_clear_error_without_the_token(hub_server, ws):
    r = aipc(ws, hf_env(hub_server, token="hf_wrong_secret"), "publish", "--all")
    assert r.returncode == 8, r.stderr
    assert "refused the token" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr
    assert "hf_wrong_secret" not in r.stdout + r.stderr
    assert not hub_server.repo_exists(OV_REPO)
    r = aipc(ws, hf_env(hub_server, token=None), "publish", "--all")
    assert r.returncode == 8 and "no Hub token" in r.stderr and "HF_TOKEN" in r.stderr


def test_a_500_is_retried(hub_server, ws):
    hub_server.fail_next("POST", r"/api/models/.*/commit/", 500)
    hub_server.fail_next("POST", r"/api/models/.*/preupload/", 503)
    r = aipc(ws, hf_env(hub_server), "publish", str(bundle(ws, "ortgenai-cpu-int4")))
    assert r.returncode == 0, r.stderr
    assert hub_server.count("POST", "/commit/") == 2
    assert hub_server.commit_count(ORT_REPO) == 2
    assert_repo_equals_bundle(hub_server, ORT_REPO, bundle(ws, "ortgenai-cpu-int4"))
    clean(hub_server)


def test_a_file_the_bundle_no_longer_has_is_deleted(hub_server, ws):
    env = hf_env(hub_server)
    folder = bundle(ws, "ortgenai-cpu-int4")
    assert aipc(ws, env, "publish", str(folder)).returncode == 0
    hub_server.seed_repo(ORT_REPO, {"old/notes.txt": b"from an earlier bundle\n"})
    r = aipc(ws, env, "publish", str(folder))
    assert r.returncode == 0, r.stderr
    assert "delete    old/notes.txt" in r.stdout and "to upload: 0 file(s)" in r.stdout
    assert_repo_equals_bundle(hub_server, ORT_REPO, folder)
    clean(hub_server)


@pytest.mark.slow
def test_upload_killed_halfway_then_resumed(hub_server, ws):
    """6 cut PUTs exhaust the client's retries (1+2+4+8+8 s): the publish fails; run again, it completes."""
    env = hf_env(hub_server)
    folder = bundle(ws, "ortgenai-cpu-int4")
    hub_server.cut_next_upload(times=6)
    r = aipc(ws, env, "publish", str(folder))
    assert r.returncode == 8, r.stderr
    assert "model.onnx.data" in r.stderr and "run the same command again" in r.stderr and "Traceback" not in r.stderr
    assert hub_server.commit_count(ORT_REPO) == 1  # nothing committed, only the repo's initial commit
    r = aipc(ws, env, "publish", str(folder))
    assert r.returncode == 0, r.stderr
    assert_repo_equals_bundle(hub_server, ORT_REPO, folder)
    assert hub_server.lfs_stores and all(n == 1 for n in hub_server.lfs_stores.values())
    assert hub_server.commit_count(ORT_REPO) == 2
    clean(hub_server)


def test_failed_gate_and_missing_smoke_are_refused(hub_server, ws):
    from aipc.pipeline.config import parse_params
    from aipc.pipeline.package import build_bundle

    params = parse_params(release_params())
    write_json(ws / "metrics/validate/openvino-int4.json", validate_record("openvino", "int4", top1=0.41))
    build_bundle(params, "openvino", "int4", ws)
    assert "**FAIL**" in (bundle(ws, "openvino-int4") / "README.md").read_text()
    r = aipc(ws, hf_env(hub_server), "publish", "--all")
    assert r.returncode == 8, r.stderr
    assert "gate min_top1_agreement failed: accuracy.top1_agreement = 0.41, needs >= 0.7" in r.stderr
    assert "fix:" in r.stderr and "Traceback" not in r.stderr
    (ws / "metrics/smoke/ortgenai-cpu-int4.json").unlink()
    build_bundle(params, "ortgenai", "cpu-int4", ws)
    r = aipc(ws, hf_env(hub_server), "publish", str(bundle(ws, "ortgenai-cpu-int4")))
    assert r.returncode == 8 and "no smoke validation" in r.stderr
    assert not hub_server.repo_exists(OV_REPO) and not hub_server.repo_exists(ORT_REPO)
    assert hub_server.count("POST", "") == 0


def test_a_rewritten_weight_and_manifest_are_refused_naming_the_file(hub_server, ws):
    """Rewriting a weight file and its sha256 (and size) in manifest.json passed every check before bundles
    were signed; model.sig lists the built bytes of every file, manifest.json included."""
    folder = bundle(ws, "ortgenai-cpu-int4")
    m = read_json(folder / "manifest.json")
    weights = next(p for p in m["files"] if p.endswith(".onnx.data") or p.endswith(".onnx"))
    data = bytearray((folder / weights).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / weights).unlink()  # a hard link of DVC's cache: never written through
    (folder / weights).write_bytes(bytes(data))
    m["files"][weights].update(sha256=sha256_file(folder / weights), size=len(data))
    (folder / "manifest.json").unlink()
    write_json(folder / "manifest.json", m)
    r = aipc(ws, hf_env(hub_server), "publish", "--all", "--dry-run")
    assert r.returncode == 8, r.stdout + r.stderr
    assert "changed after the bundle was signed" in r.stderr and "aipc bundle ortgenai cpu-int4" in r.stderr
    assert weights in r.stderr or "manifest.json" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_release_is_signed_by_the_key_from_the_secret_and_verifies_after_download(hub_server, ws, tmp_path):
    """With bundle.public_key naming the release key, bundles signed by another key (this machine's
    development key) are refused; rebuilt with AIPC_SIGNING_KEY (the PEM text, as a CI secret gives it) they
    publish through scripts/release.sh, and `aipc verify --public-key` / model-signing's CLI accept the
    download while another key is refused."""
    from aipc.pipeline.package import signing

    keys = tmp_path / "keys"
    signing.generate_key_pair(keys / "release.priv.pem", ws / "release.pub.pem")
    data = release_params()
    data["bundle"]["public_key"] = "release.pub.pem"
    (ws / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    env = hf_env(hub_server)
    r = release(ws, env, AIPC_RELEASE_TAG="v1")
    assert r.returncode == 8, r.stdout + r.stderr
    assert "model.sig was made with another key" in r.stderr and "AIPC_SIGNING_KEY" in r.stderr, r.stderr
    assert not hub_server.repo_exists(OV_REPO)
    secret = (keys / "release.priv.pem").read_text()
    for name in ("openvino int4", "ortgenai cpu-int4"):
        b = aipc(ws, {**env, "AIPC_SIGNING_KEY": secret}, "bundle", *name.split())
        assert b.returncode == 0, b.stderr
    m = read_json(bundle(ws, "openvino-int4") / "manifest.json")
    assert m["signature"]["key"] == "release"
    assert m["signature"]["fingerprint"] == signing.fingerprint((ws / "release.pub.pem").read_bytes())
    assert "## Verify it" in (bundle(ws, "openvino-int4") / "README.md").read_text()
    r = release(ws, env, AIPC_RELEASE_TAG="v1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert secret.splitlines()[1] not in r.stdout + r.stderr  # the key is never printed
    assert "model.sig" in hub_server.list_files(OV_REPO)
    v = aipc(tmp_path, hf_env(hub_server, token=None), "verify", OV_REPO, "--public-key", str(ws / "release.pub.pem"))
    assert v.returncode == 0 and "signed by the key" in v.stdout, v.stderr
    other = tmp_path / "other.pub.pem"
    signing.generate_key_pair(tmp_path / "other.priv.pem", other)
    v = aipc(tmp_path, hf_env(hub_server, token=None), "verify", OV_REPO, "--public-key", str(other))
    assert v.returncode == 8 and "made with another key" in v.stderr, v.stderr
    clean(hub_server)


@pytest.mark.parametrize("tamper", ["edit", "extra", "missing"])
def test_tampered_bundle_is_refused(hub_server, ws, tamper):
    folder = bundle(ws, "ortgenai-cpu-int4")
    target = folder / "genai_config.json"
    if tamper == "edit":
        text = target.read_text()
        target.unlink()
        target.write_text(text.replace('"context_length"', '"context_length" ', 1))
    elif tamper == "extra":
        (folder / "notes.txt").write_text("hand-added\n")
    else:
        target.unlink()
    r = aipc(ws, hf_env(hub_server), "publish", "--all")
    assert r.returncode == 8, r.stderr
    name = "notes.txt" if tamper == "extra" else "genai_config.json"
    assert name in r.stderr and "does not match its manifest.json" in r.stderr and "aipc bundle ortgenai cpu-int4" \
        in r.stderr
    assert not hub_server.repo_exists(OV_REPO), "all bundles are checked before anything is published"


def test_dry_run_prints_the_plan_and_writes_nothing(hub_server, ws):
    r = aipc(ws, hf_env(hub_server), "publish", "--all", "--dry-run", "--tag", "v1")
    assert r.returncode == 0, r.stderr
    assert f"openvino-int4 -> {OV_REPO} (new repo, public)" in r.stdout
    assert "add       openvino_model.bin" in r.stdout and "add       model.onnx.data" in r.stdout
    assert "dry run: nothing was written" in r.stdout
    assert [m for m, _ in hub_server.requests if m not in ("GET", "HEAD")] == []
    assert not hub_server.repo_exists(OV_REPO) and hub_server.bytes_uploaded == 0
    clean(hub_server)


def test_release_workflow_lint():
    wf = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    on = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as a boolean
    assert on["push"]["tags"] and all(t.startswith("v") for t in on["push"]["tags"])
    assert set(on) == {"push"} and "branches" not in on["push"], "releases run on tags only"
    assert wf["permissions"] == {"contents": "read"}
    (job,) = wf["jobs"].values()
    steps = job["steps"]
    runs = [s for s in steps if "run" in s]
    assert [s["run"].strip() for s in runs] == ["bash scripts/release.sh"], "CI runs exactly the tested script"
    release_step = runs[0]
    assert release_step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    # the bundles are signed with the release key, a secret too (pipeline/package/signing.py)
    assert release_step["env"]["AIPC_SIGNING_KEY"] == "${{ secrets.AIPC_SIGNING_KEY }}"
    for s in steps:  # the secrets reach the script as env only: never on a command line, never echoed
        assert "secrets." not in s.get("run", "") and "HF_TOKEN" not in s.get("run", "")
        assert "AIPC_SIGNING_KEY" not in s.get("run", "")
        assert "secrets." not in json.dumps(s.get("with", {}))
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    script = (ROOT / "scripts/release.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts/release.sh")]).returncode == 0
    assert "scripts/setup.sh" in script and "dvc repro" in script and "publish --all" in script
    assert "set -x" not in script.replace("set +x", "")
    assert not [line for line in script.splitlines() if ("HF_TOKEN" in line or "AIPC_SIGNING_KEY" in line)
                and not line.lstrip().startswith("#")], "the script never touches the token or the key"
    assert (ROOT / "docs/dvc-remote.example").is_file()


@pytest.mark.slow
def test_every_embedded_bundle_publishes_and_downloads_back_bit_identical(repro_workspace, tmp_path):
    """The issue's "done when": every bundle of the embedded model (the real dvc.yaml, `dvc repro`) goes to the
    local Hub through scripts/release.sh, downloads back identical, and a second release uploads 0 bytes."""
    from aipc.pipeline.config import load_params

    try:
        from .hubserver import HubServer
    except ImportError:
        from hubserver import HubServer

    ws, repro, _ = repro_workspace
    assert repro.returncode == 0, repro.stderr[-3000:]
    params = load_params(ws / "params.yaml")
    with HubServer(root=tmp_path / "hub", users=("testuser", params.publish.org)) as server:
        env = hf_env(server)
        r = release(ws, env, AIPC_RELEASE_TAG="v0.1.0")
        assert r.returncode == 0, r.stderr[-3000:]
        for backend, variant in params.artifact_ids():
            repo = params.publish.repo_id(params.model.name, backend, variant)
            folder = bundle(ws, f"{backend}-{variant}")
            assert_repo_equals_bundle(server, repo, folder, "v0.1.0")
            meta = yaml.safe_load((folder / "README.md").read_text().split("---\n", 2)[1])
            assert meta["license"] == "apache-2.0" and meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
            v = aipc(tmp_path, hf_env(server, token=None), "verify", repo, "--revision", "v0.1.0")
            assert v.returncode == 0, v.stderr
            # bound to the build: the stage and the artifact as dvc.lock recorded them, and the code's commit
            build = json.loads((folder / "manifest.json").read_text())["build"]
            assert build["dvc_stage"] == f"export-{backend}@{variant}", build
            assert build["dvc_out"] == f"artifacts/{backend}/{variant}" and build["dvc_md5"].endswith(".dir")
        server.reset_counters()
        r = release(ws, env, AIPC_RELEASE_TAG="v0.1.0")
        assert r.returncode == 0, r.stderr[-3000:]
        assert server.bytes_uploaded == 0 and server.count("POST", "/commit/") == 0
        clean(server)


@pytest.mark.slow
def test_a_bundle_changed_and_re_signed_is_refused_by_what_dvc_lock_records(repro_workspace, tmp_path):
    """Rewrite a file of a built bundle, its sha256 in manifest.json, and sign it again (with any key: without
    bundle.public_key publish checks the key the bundle ships): the signature passes, dvc.lock does not."""
    from aipc.pipeline.package import signing

    try:
        from .test_pipeline_e2e import linked_copy
    except ImportError:
        from test_pipeline_e2e import linked_copy

    ws, repro, env = repro_workspace
    assert repro.returncode == 0
    copy = linked_copy(ws, tmp_path / "ws")
    folder = bundle(copy, "openvino-fp16")
    target = folder / "openvino_detokenizer.xml"
    data = target.read_bytes().replace(b"<net ", b"<net  ", 1)
    target.unlink()  # hard-linked from DVC's cache
    target.write_bytes(data)
    m = read_json(folder / "manifest.json")
    m["files"][target.name].update(sha256=sha256_file(target), size=len(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone"))
        with signing.signing_key() as key:
            for name in ("manifest.json", signing.PUBLIC_KEY, signing.SIGNATURE):
                (folder / name).unlink()
            (folder / signing.PUBLIC_KEY).write_bytes(key.public_pem)
            m["files"][signing.PUBLIC_KEY].update(sha256=sha256_file(folder / signing.PUBLIC_KEY),
                                                  size=len(key.public_pem))
            m["signature"]["fingerprint"] = key.fingerprint
            write_json(folder / "manifest.json", m)
            signing.sign(folder, key)
    r = aipc(copy, {k: v for k, v in env.items() if k != "PYTHONPATH"}, "publish", "--all", "--dry-run")
    assert r.returncode == 8, r.stdout + r.stderr
    assert ("openvino_detokenizer.xml differ(s) from what dvc.lock records for stage export-openvino@fp16"
            in r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_npu_bundle_says_its_model_is_a_pickle(built, tmp_path):
    """An NPU-library artifact (the export record's shape; model.pt a real torch.save file, the loader the
    export ships): manifest and card say it is a pickle, load it through the bundle's own loader, and pin the
    exact versions it loads with."""
    import torch

    from aipc.pipeline.config import parse_params
    from aipc.pipeline.package import build_bundle

    art = tmp_path / "artifacts/npu/int4"
    art.mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, art / "model.pt")
    shutil.copyfile(built / "artifacts/source/config.json", art / "config.json")
    shutil.copyfile(ROOT / "envs/npu/aipc_npu/loader.py", art / "aipc_npu_loader.py")
    runtime = {"intel-npu-acceleration-library": "1.4.0", "torch": "2.6.0+cpu", "transformers": "4.57.6",
               "python": "3.11.7"}
    NPUExportRecord.model_validate({
        "backend": "npu", "variant": "int4", "params": {"dtype": "int4"},
        "library": {"name": "intel-npu-acceleration-library", "version": "1.4.0"},
        "runtime": runtime, "runtime_must_match": list(runtime)[:3], "format": "torch-pickle", "pickle": True,
        "warning": "model.pt is a pickle", "loader": "aipc_npu_loader.py", "model_file": "model.pt",
        "compile": {"call": "intel_npu_acceleration_library.compile", "quantization": "weight-only RTN",
                    "lm_head_untied": False, "linear_types": ["QuantizedLinear"], "packing": "neural-compressor"},
        "device": "CPU", "files": file_table(art), "toolchain": {"python": "3.11.7"},
        "device_fallback": "CPU"}).write(art / "aipc_export.json")
    write_json(tmp_path / "metrics/smoke/npu-int4.json", smoke_record("npu"))
    shutil.copytree(built / "artifacts/source", tmp_path / "artifacts/source")
    data = release_params()
    data["npu"]["variants"] = {"int4": {"dtype": "int4"}}
    out = build_bundle(parse_params(data), "npu", "int4", tmp_path)
    m = read_json(out / "manifest.json")
    assert m["pickle_files"] == ["model.pt"] and m["runtime_exact"] is True
    assert m["min_runtime"] == {k: runtime[k] for k in list(runtime)[:3]} and m["runtime_env"] == runtime
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert "library_name" not in meta and {"npu", "intel-npu-acceleration-library"} <= set(meta["tags"])
    assert "model.pt is a Python (torch) pickle: loading it runs code" in card
    assert "Python 3.11 (`pip install \"intel-npu-acceleration-library==1.4.0\" \"torch==2.6.0\" " in card
    assert "from aipc_npu_loader import load\nmodel = load(path)\n" in card and "- transformers == 4.57.6" in card
    assert "pipeline" not in card.split("## Use it")[1].split("## Quantization")[0]  # nothing of this project
    assert "CPU fallback" in card
