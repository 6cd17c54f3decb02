"""The CLI: instant help, one clear message and a non-zero exit for user mistakes, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIPC = [sys.executable, "-m", "aipc"]


def run(args, cwd=ROOT, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(AIPC + args, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["--help"], ["download", "--help"], ["export", "openvino", "--help"], ["check"]])
def test_help_and_check_are_fast(args):
    t0 = time.perf_counter()
    r = run(args)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 2.0, f"{args} took {elapsed:.2f}s"


def test_check_reads_the_model_config_it_can_reach_without_loading_weights(tmp_path, tiny_phi3):
    """A local model that is not Phi-3, or whose widths the group size does not divide, is refused by
    `aipc check` in under 2 s; a pinned Hub revision already in the Hub cache is checked from there."""
    import json
    import shutil

    import yaml

    def params_for(model: dict, group_size: int = 64) -> Path:
        data = yaml.safe_load((ROOT / "params.yaml").read_text())
        data["model"] = model
        data["openvino"]["variants"]["int4"]["group_size"] = group_size
        p = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
        p.write_text(yaml.safe_dump(data))
        return p

    def check(p: Path, **env):
        t0 = time.perf_counter()
        r = run(["--params", str(p), "check"], cwd=tmp_path, env=env)
        return r, time.perf_counter() - t0

    local = {"name": "tiny", "source": "local", "path": str(tiny_phi3)}
    r, took = check(params_for(local))
    assert r.returncode == 0 and "model config: checked" in r.stdout, r.stderr
    assert took < 2.0, took
    r, took = check(params_for(local, group_size=128))  # the tiny model's hidden size is 192
    assert r.returncode == 2 and "group_size = 128" in r.stderr and "192" in r.stderr, r.stderr
    assert took < 2.0 and "Traceback" not in r.stderr
    llama = tmp_path / "llama"
    shutil.copytree(tiny_phi3, llama)
    cfg = json.loads((llama / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (llama / "config.json").write_text(json.dumps(cfg))
    r, took = check(params_for({**local, "path": str(llama)}))
    assert r.returncode == 3 and "is not a Phi-3 checkpoint" in r.stderr and "'llama'" in r.stderr, r.stderr
    assert took < 2.0 and "Traceback" not in r.stderr
    # a Hub source: the cached config.json of the pinned revision (offline)
    rev = "0" * 40
    snap = tmp_path / "hf" / "hub" / "models--someone--phi3" / "snapshots" / rev
    snap.mkdir(parents=True)
    shutil.copyfile(tiny_phi3 / "config.json", snap / "config.json")
    hub = {"name": "x", "source": "hub", "repo_id": "someone/phi3", "revision": rev}
    r, _ = check(params_for(hub, group_size=128), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert r.returncode == 2 and "group_size = 128" in r.stderr, r.stderr
    r, _ = check(params_for({**hub, "repo_id": "someone/other"}), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert r.returncode == 0 and "not downloaded yet" in r.stdout, r.stderr
    # a user's evaluation text that is not there (paths are relative to the folder dvc runs in)
    p = params_for(local)
    data = yaml.safe_load(p.read_text())
    data["validation"]["texts"] = ["python_docs", "texts/ours.txt"]
    p.write_text(yaml.safe_dump(data))
    r, took = check(p)
    assert r.returncode == 2 and "validation.texts: texts/ours.txt: no such file" in r.stderr, r.stderr
    assert "under texts/" in r.stderr and "Traceback" not in r.stderr and took < 2.0
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "ours.txt").write_text("our text")
    r, _ = check(p)
    assert r.returncode == 0, r.stderr


def test_heavy_libraries_not_imported_for_help():
    code = ("import sys; from stages.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch','openvino','onnxruntime_genai','transformers','optimum','dvc') if m in sys.modules]\n"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_bad_params_one_message_no_traceback(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text().replace("ratio: 0.6", "ratio: 1.7"))
    r = run(["--params", str(p), "check"])
    assert r.returncode == 2
    assert "openvino.variants.int4.ratio" in r.stderr and "1.7" in r.stderr
    assert "fix:" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_variant_is_a_clear_error():
    r = run(["export", "openvino", "int3"])
    assert r.returncode == 2
    assert "openvino.variants has no 'int3'" in r.stderr and "int4" in r.stderr
    assert "Traceback" not in r.stderr


def test_smoke_of_missing_artifact(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    r = run(["smoke", "openvino", "int4"], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode != 0
    assert "no such artifact" in r.stderr and "dvc repro" in r.stderr
    assert "Traceback" not in r.stderr


def test_cost_metrics_written_on_success_only(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = tmp_path / "metrics" / "cost" / "check.json"
    r = run(["--cost-metrics", str(out), "check"], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    import json

    m = json.loads(out.read_text())
    assert m["stage"] == "check" and 0 < m["wall_s"] < 30 and m["peak_rss_mib"] > 10
    assert m["machine"]["cpus"] >= 1
    out.unlink()
    (tmp_path / "params.yaml").write_text("model: {}\n")
    r = run(["--cost-metrics", str(out), "check"], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and not out.exists(), "a failed stage writes no cost metric"


def test_cost_metrics_count_child_processes(tmp_path):
    """A child's peak (e.g. the NPU-library worker) is the stage's peak when it is the larger."""
    import json

    from aipc.pipeline.cost import measure

    out = tmp_path / "c.json"
    with measure("x", out):
        subprocess.run([sys.executable, "-c", "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096])"], check=True)
    m = json.loads(out.read_text())
    assert m["peak_rss_children_mib"] >= 300 and m["peak_rss_mib"] >= 300, m


def test_report_shows_cost_next_to_accuracy(tmp_path):
    import json

    (tmp_path / "metrics" / "validate").mkdir(parents=True)
    (tmp_path / "metrics" / "cost").mkdir()
    (tmp_path / "metrics" / "validate" / "openvino-int4.json").write_text(json.dumps(
        {"backend": "openvino", "variant": "int4", "artifact": "artifacts/openvino/int4", "protocol": {}, "texts": {},
         "accuracy": {"worst_ppl_ratio": 1.1, "top1_agreement": 0.8, "kl_mean": 0.1, "kl_p99": 1.0, "texts": {}},
         "tokenizer_parity": {"encode_agreement": 1.0},
         "smoke": {"passed": True, "prefix_agreement": None, "file": "metrics/smoke/openvino-int4.json"},
         "gates": [], "passed": True}))
    for stage, wall, rss in (("export-openvino-int4", 12.5, 1500.0), ("validate-openvino-int4", 3.0, 900.0)):
        (tmp_path / "metrics" / "cost" / f"{stage}.json").write_text(json.dumps(
            {"stage": stage, "wall_s": wall, "cpu_s": wall, "peak_rss_mib": rss, "peak_rss_self_mib": rss,
             "peak_rss_children_mib": 0.0, "machine": {"cpus": 2, "mem_total_gib": 23.4}, "process": "fresh"}))
    r = run(["report", "--no-plots"], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "openvino-int4" in r.stdout and "per-stage cost" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("export-openvino-int4"))
    assert "12.5" in line and "1500" in line
    assert "15.5" in next(ln for ln in r.stdout.splitlines() if ln.startswith("total"))


def test_python_dash_m_aipc_is_the_command():
    """`python -m aipc` is the same command as the console script, `aipc repro` included (the machinery's
    own command, added by aipc.cli on top of the command layer)."""
    r = subprocess.run([sys.executable, "-m", "aipc", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "repro" in r.stdout and "publish" in r.stdout, r.stdout + r.stderr


def test_workspace_init_prints_each_line_once(tmp_path):
    """DVC logs through handlers of its own; passed on to the command's logging too, "Initialized DVC
    repository." came twice."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    r = subprocess.run(AIPC + ["workspace", "init", str(tmp_path / "ws"), "--profile", str(ROOT / "configs" / "embedded.yaml")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [re.sub(r"^\d\d:\d\d:\d\d \w+ [\w.]+: ", "", ln) for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines.count("Initialized DVC repository.") == 1, lines
    assert len(lines) == len(set(lines)), lines


def test_longrope_factor_advice_is_not_printed_and_other_warnings_are(tmp_path):
    """A LongRoPE config as the Hub ships it: transformers' advice to its authors (set `factor`) is dropped by the
    command's logging; its other warnings are not."""
    code = (
        "import json, logging\n"
        "from aipc.stages.cli import _setup_logging\n"
        "_setup_logging(0)\n"
        "from transformers import Phi3Config\n"
        f"cfg = json.load(open({str(ROOT / 'tests/data/configs/Phi-3-mini-128k-instruct.json')!r}))\n"
        "Phi3Config(**{k: v for k, v in cfg.items() if not k.startswith('_') and k != 'auto_map'})\n"
        "logging.getLogger('transformers.modeling_rope_utils').warning('another warning')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Please set the `factor`" not in r.stderr and "another warning" in r.stderr, r.stderr
