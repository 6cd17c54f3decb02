"""The CLI: instant help, one clear message and a non-zero exit for user mistakes, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIPC = [sys.executable, "-m", "stages"]


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
