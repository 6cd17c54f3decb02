"""Atomic outputs: a killed writer never leaves a half-written artifact that is picked up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.fsutil import atomic_dir, dump_json, file_table, write_json

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_dir_replaces_on_success_and_keeps_old_on_error(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    assert oct(final.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "a").write_text("2")
            raise RuntimeError("boom")
    assert (final / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_sigkill_mid_write_leaves_nothing_picked_up_and_rerun_completes(tmp_path):
    final = tmp_path / "artifact"
    code = (
        "import sys, time; from pathlib import Path; from pipeline.fsutil import atomic_dir\n"
        f"with atomic_dir(Path({str(final)!r})) as d:\n"
        "    (d / 'half.bin').write_bytes(b'x' * 1000)\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not final.exists()
    stale = [x for x in tmp_path.iterdir() if x.name.startswith(".artifact.tmp-")]
    assert len(stale) == 1
    with atomic_dir(final) as d:
        (d / "ok").write_text("done")
    assert (final / "ok").read_text() == "done"
    assert [x.name for x in tmp_path.iterdir()] == ["artifact"], "the stale temp dir is swept"


def test_json_is_deterministic_and_world_readable(tmp_path):
    a = {"b": 1, "a": [1, 2], "c": {"z": 1, "y": "é"}}
    write_json(tmp_path / "x.json", a)
    assert (tmp_path / "x.json").read_text() == dump_json(dict(reversed(list(a.items()))))
    assert oct((tmp_path / "x.json").stat().st_mode & 0o777) == "0o644"
    t = file_table(tmp_path)
    assert list(t) == ["x.json"] and t["x.json"]["size"] == (tmp_path / "x.json").stat().st_size
