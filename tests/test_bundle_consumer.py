"""Bundles as their consumers get them: every code block a model card prints, run exactly as printed.

The embedded model's bundles (the real `dvc repro`) are published to the local Hub-protocol server; each
card's snippet then runs with ``HF_ENDPOINT`` pointed at it, in a clean virtual environment built from
nothing but the card's own install line (wheels from scripts/wheelhouse.sh, the lock's versions, no
index), with no file of this repository on the path. Each must print the greedy answer the smoke stage
recorded for that bundle. The NPU library's snippet runs in the NPU environment (its card pins the
exact versions that environment holds), with no aipc code importable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from .hubserver import HubServer, hf_env
except ImportError:
    from hubserver import HubServer, hf_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
AIPC = str(Path(sys.executable).parent / "aipc")
CACHE = Path(os.environ.get("AIPC_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aipc")
WHEELHOUSE = CACHE / "wheelhouse"
NPU_PYTHON = ROOT / ".venv-npu" / "bin" / "python"

# every bundle of the embedded model and the runtimes its card shows
RUNTIMES = {
    "openvino-int4": ["OpenVINO GenAI", "Optimum Intel"],
    "openvino-fp16": ["OpenVINO GenAI", "Optimum Intel"],
    "openvino-npu-int4": ["OpenVINO GenAI", "Optimum Intel"],
    "ortgenai-dml-int4": ["ONNX Runtime GenAI"],
    "ortgenai-dml-fp16": ["ONNX Runtime GenAI"],
    "ortgenai-cpu-int4": ["ONNX Runtime GenAI"],
    "npu-int8": ["Intel NPU Acceleration Library"],
}
CASES = [(b, r) for b, rs in RUNTIMES.items() for r in rs]
LOCAL_COPY = re.compile(r'^path = hf\.snapshot_download\("[^"]+"\)  # a local copy of this bundle instead: '
                        r'path = "path/to/the/bundle"$', re.M)


def snippets(card: str) -> dict[str, tuple[str, str]]:
    """{runtime: (its pip install line, its code)} of the card's "Use it" section."""
    use = card.split("## Use it\n", 1)[1].split("\n## ", 1)[0]
    out: dict[str, tuple[str, str]] = {}
    for m in re.finditer(r"^\*\*(?P<title>[^*]+)\*\*(?P<head>.*?)\n```python\n(?P<code>.*?)\n```$", use, re.M | re.S):
        install = re.search(r"`(pip install [^`]+)`", m["head"])
        assert install, f"{m['title']}: no install line"
        out[m["title"]] = (install[1], m["code"] + "\n")
    return out


def printed_answer(card: str) -> str:
    m = re.search(r"Output: the greedy answer the smoke stage recorded \(on CPU\):\n\n```text\n(.*?)\n```", card, re.S)
    assert m, "the card does not show the expected answer"
    return m[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no pip configuration of this machine (find-links, extra indexes, constraints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def consumer_env(install_line: str) -> Path:
    """The python of a virtual environment holding exactly what ``install_line`` installs, built from the
    wheelhouse with no index (so offline). Cached per machine under the line, Python and wheels it came from."""
    from filelock import FileLock

    args = shlex.split(install_line)
    assert args[:2] == ["pip", "install"] and len(args) > 2, install_line
    wheels = sorted(p.name for p in WHEELHOUSE.glob("*.whl"))
    if not wheels or not list(WHEELHOUSE.glob(".complete-*")):
        pytest.fail(f"{WHEELHOUSE}: no wheels; run `bash scripts/setup.sh` (it runs scripts/wheelhouse.sh)")
    key = hashlib.sha256(json.dumps([sys.version, args, wheels]).encode()).hexdigest()[:16]
    wheels_key = hashlib.sha256(json.dumps([sys.version, wheels]).encode()).hexdigest()[:16]
    env_dir = CACHE / "consumer-envs" / key
    python = env_dir / "bin" / "python"
    done = env_dir / ".aipc-consumer-env.json"
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(env_dir) + ".lock"):
        if not done.is_file():
            shutil.rmtree(env_dir, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(env_dir)], check=True, env=_clean_env())
            r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE),
                                *args[2:]], env=_clean_env(), capture_output=True, text=True, timeout=1200)
            assert r.returncode == 0, f"{install_line}: {r.stderr[-3000:]}"
            done.write_text(json.dumps({"install": install_line, "wheels": wheels_key}))
            _prune(env_dir.parent, wheels_key)
    return python


def _prune(root: Path, wheels_key: str) -> None:
    """Remove environments built from another wheelhouse (a changed lock): ~0.5 GB each, never used again."""
    for done in root.glob("*/.aipc-consumer-env.json"):
        try:
            stale = json.loads(done.read_text()).get("wheels") != wheels_key
        except (OSError, ValueError):
            stale = True
        if stale:
            shutil.rmtree(done.parent, ignore_errors=True)
            Path(str(done.parent) + ".lock").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def published(repro_workspace, tmp_path_factory):
    """The embedded model's bundles on the local Hub server: (workspace, server)."""
    from aipc.pipeline.config import load_params

    ws, repro, _ = repro_workspace
    assert repro.returncode == 0, repro.stderr[-3000:]
    org = load_params(ws / "params.yaml").publish.org
    with HubServer(root=tmp_path_factory.mktemp("consumer-hub"), users=("testuser", org)) as server:
        env = hf_env(server)
        env.pop("PYTHONPATH", None)
        r = subprocess.run([AIPC, "publish", "--all"], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        yield ws, server


def _card(ws: Path, bundle: str) -> tuple[str, dict]:
    folder = ws / "artifacts" / "bundles" / bundle
    return (folder / "README.md").read_text(encoding="utf-8"), json.loads((folder / "manifest.json").read_text())


def run_snippet(python: Path, code: str, server, cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "snippet.py").write_text(code, encoding="utf-8")
    env = hf_env(server, token=None, hf_home=cwd / "hf")  # a consumer: no token, an empty cache, loopback only
    env = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(python), "snippet.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_cards_show_every_runtime_and_the_answer(published):
    ws, _ = published
    assert sorted(p.name for p in (ws / "artifacts" / "bundles").iterdir()) == sorted(RUNTIMES)
    for bundle, runtimes in RUNTIMES.items():
        card, manifest = _card(ws, bundle)
        assert list(snippets(card)) == runtimes, bundle
        assert printed_answer(card) == manifest["validation"]["smoke"]["example"]["text"], bundle
        for _install, code in snippets(card).values():
            assert LOCAL_COPY.search(code), f"{bundle}: no local-folder form"
            assert "pipeline" not in code and "aipc " not in code  # nothing of this project


@pytest.mark.parametrize("bundle,runtime", CASES)
def test_card_snippet_runs_verbatim_and_gives_the_smoke_answer(published, bundle, runtime, tmp_path):
    ws, server = published
    card, manifest = _card(ws, bundle)
    install, code = snippets(card)[runtime]
    if runtime == "Intel NPU Acceleration Library":
        python = npu_consumer_python(install)
    else:
        python = consumer_env(install)
    r = run_snippet(python, code, server, tmp_path / "run")
    assert r.returncode == 0, f"{bundle} / {runtime}:\n{code}\n{r.stderr[-4000:]}"
    assert r.stdout.strip() == manifest["validation"]["smoke"]["example"]["text"].strip(), (bundle, runtime, r.stdout)


@pytest.mark.parametrize("bundle,runtime", [("openvino-npu-int4", "OpenVINO GenAI"),
                                            ("npu-int8", "Intel NPU Acceleration Library")])
def test_card_snippet_from_a_local_folder(published, bundle, runtime, tmp_path):
    """The card's local-copy form: the bundle downloaded (or copied) to a folder, the path given instead."""
    ws, server = published
    card, manifest = _card(ws, bundle)
    install, code = snippets(card)[runtime]
    local = tmp_path / "my-bundle"
    shutil.copytree(ws / "artifacts" / "bundles" / bundle, local)
    code = LOCAL_COPY.sub(f"path = {str(local)!r}", code)
    assert "snapshot_download" not in code
    python = npu_consumer_python(install) if runtime.startswith("Intel NPU") else consumer_env(install)
    before = len(server.requests)
    r = run_snippet(python, code, server, tmp_path / "run")
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.strip() == manifest["validation"]["smoke"]["example"]["text"].strip()
    assert len(server.requests) == before  # nothing asked of the Hub


def npu_consumer_python(install_line: str) -> Path:
    """The NPU environment, after checking it holds every exact pin of the card's line and no aipc code."""
    if not NPU_PYTHON.is_file():
        pytest.fail(f"{NPU_PYTHON}: no NPU environment; run `bash scripts/setup.sh`")
    pins = dict(a.split("==", 1) for a in shlex.split(install_line)[2:] if "==" in a)
    assert {"intel-npu-acceleration-library", "torch", "transformers"} <= set(pins), install_line
    probe = ("import json, importlib.metadata as m, importlib.util as u; print(json.dumps("
             "[{k: m.version(k) for k in %r}, [n for n in ('pipeline', 'aipc_npu', 'stages', 'validation') "
             "if u.find_spec(n)]]))" % sorted(pins))
    r = subprocess.run([str(NPU_PYTHON), "-c", probe], env=_clean_env(), cwd="/", capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    have, project = json.loads(r.stdout)
    assert {k: v.split("+")[0] for k, v in have.items()} == pins
    assert project == [], f"aipc code importable in the NPU environment: {project}"
    return NPU_PYTHON


def verify_section(card: str) -> tuple[str, list[str]]:
    """(the pip install line, the shell commands) of the card's "Verify it" section."""
    section = card.split("## Verify it\n", 1)[1].split("\n## ", 1)[0]
    install = re.search(r"`(pip install [^`]+)`", section)
    block = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert install and block, section
    return install[1], block[1].splitlines()


@pytest.mark.parametrize("bundle", ["openvino-int4", "npu-int8"])
def test_card_verify_command_runs_verbatim_and_catches_a_changed_byte(published, bundle, tmp_path):
    """The card's signature check, with nothing but model-signing's own command line and huggingface_hub's
    `hf`, exactly as printed: it verifies the published bundle, and fails naming the file once a byte of a
    downloaded file changed."""
    ws, server = published
    card, manifest = _card(ws, bundle)
    install, commands = verify_section(card)
    python = consumer_env(install)
    env = hf_env(server, token=None, hf_home=tmp_path / "hf")
    env = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    for cmd in commands:
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    assert "Verification succeeded" in r.stdout + r.stderr
    folder = tmp_path / manifest["repo_id"].split("/")[-1]
    target = folder / "config.json"
    data = target.read_bytes()
    target.write_bytes(data.replace(b"{", b"{ ", 1))
    r = subprocess.run(["bash", "-c", commands[-1]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "config.json" in r.stdout + r.stderr, r.stdout + r.stderr
