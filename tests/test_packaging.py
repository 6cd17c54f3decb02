"""The wheel: one top-level import package, ``aipc``, with the layers and the shipped texts inside it, and
``python -m aipc`` working from that install alone (no checkout on the path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_one_package_and_python_dash_m_aipc_runs_from_it(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    for name in ("aipc", "pipeline", "stages", "validation"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("aipc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"aipc"}
    for shipped in ("aipc/pipeline/config.py", "aipc/stages/cli.py", "aipc/validation/runners/base.py",
                    "aipc/pipeline/compat/optimum_intel.py", "aipc/validation/data/smoke_prompts.json",
                    "aipc/validation/data/eval/gpl3.txt", "aipc/validation/data/calibration/apache2.txt"):
        assert shipped in names, shipped

    # installed alone into a folder; this environment provides the dependencies, the checkout is not on the path
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    probe = ("import aipc.pipeline, aipc.validation.reference as ref, importlib.util as u; "
             "print(aipc.pipeline.__file__); print(ref.__file__); print(u.find_spec('pipeline'))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    first, second, generic = r.stdout.splitlines()
    assert first.startswith(str(site)) and second.startswith(str(site)), r.stdout
    assert generic == "None", "a generic top-level `pipeline` package is importable"
    r = subprocess.run([sys.executable, "-m", "aipc", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "repro" in r.stdout and "publish" in r.stdout, r.stdout + r.stderr
