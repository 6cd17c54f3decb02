"""Atomic outputs: a killed writer never leaves a half-written artifact that is picked up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aipc.pipeline.fsutil import MappedPages, atomic_dir, dump_json, file_table, write_json

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


def _rss_file_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile")


@pytest.mark.parametrize("mode", ["r", "c"])  # read-only, and private copy-on-write (torch maps checkpoints so)
def test_mapped_pages_are_dropped_after_their_last_read_and_refault_unchanged(tmp_path, mode):
    import numpy as np

    data = np.random.default_rng(0).integers(0, 2**16, 32 << 20, dtype=np.uint16)  # 64 MiB
    (tmp_path / "w.bin").write_bytes(data.tobytes())
    mapped = np.memmap(tmp_path / "w.bin", dtype=np.uint16, mode=mode)
    total = int(mapped.sum(dtype=np.uint64))  # every page read
    before = _rss_file_mib()
    dropped = MappedPages(tmp_path / "w.bin")(mapped)
    after = _rss_file_mib()
    assert dropped == 64 << 20 and before - after > 60, (dropped, before, after)
    assert int(mapped.sum(dtype=np.uint64)) == total == int(data.sum(dtype=np.uint64))
    # an array outside any mapping of that file (here: the heap) is left alone
    assert MappedPages(tmp_path / "w.bin")(data) == 0
    assert int(data.sum(dtype=np.uint64)) == total


def test_mapped_pages_leave_shared_writable_mappings_and_partial_pages_alone(tmp_path):
    import mmap

    import numpy as np

    (tmp_path / "w.bin").write_bytes(bytes(4 * mmap.PAGESIZE))
    shared = np.memmap(tmp_path / "w.bin", dtype=np.uint8, mode="r+")
    shared[:] = 7  # dirty shared pages: dropping them would be the kernel's business, not ours
    assert MappedPages(tmp_path / "w.bin")(shared) == 0
    ro = np.memmap(tmp_path / "w.bin", dtype=np.uint8, mode="r")
    # a range that covers no whole page (the rest of those pages may belong to a neighbour) is left alone
    assert MappedPages(tmp_path / "w.bin").release(ro.ctypes.data + 1, mmap.PAGESIZE) == 0
    assert MappedPages(tmp_path / "w.bin").release(ro.ctypes.data + 1, 2 * mmap.PAGESIZE) == mmap.PAGESIZE


def test_safetensors_header_reads_a_real_file_and_names_each_defect(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from aipc.pipeline.errors import SourceError
    from aipc.pipeline.fsutil import SafetensorsError, safetensors_header
    from aipc.pipeline.preflight import count_parameters

    good = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.ones(5, np.float16)}, str(good), metadata={"k": "v"})
    header = safetensors_header(good)
    assert set(header) == {"a", "b"} and header["a"]["shape"] == [3, 4] and header["b"]["dtype"] == "F16"
    assert count_parameters(tmp_path) == 17
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-3], "truncated or padded"),
        "padded": (data + b"\0", "truncated or padded"),
        "tiny": (data[:5], "truncated (5 bytes)"),
        "bad length": ((1 << 40).to_bytes(8, "little") + data[8:], "bad header length"),
        "not json": (len(b"{nope").to_bytes(8, "little") + b"{nope", "corrupt safetensors header"),
        "not a dict": (len(b"[1]").to_bytes(8, "little") + b"[1]", "corrupt safetensors header"),
        "no offsets": (len(b'{"a":{}}').to_bytes(8, "little") + b'{"a":{}}', "without data_offsets"),
    }
    for name, (blob, message) in cases.items():
        good.write_bytes(blob)
        with pytest.raises(SafetensorsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            safetensors_header(good)
        # the preflight's parameter count turns it into the project's error, naming the file and the fix
        with pytest.raises(SourceError) as err:
            count_parameters(tmp_path)
        assert str(good) in str(err.value) and "download again" in err.value.fix, name


def test_pages_dropped_while_bounds_a_read_only_mapping_and_leaves_written_pages(tmp_path):
    """What a runtime compiling a mapped IR does: read every page once, copying. With the dropper the
    file's pages don't stay resident; the data reads back unchanged; a written private page (a
    copy-on-write copy, which dropping would lose) and files elsewhere are never touched."""
    import numpy as np

    from aipc.pipeline.fsutil import pages_dropped_while

    data = np.random.default_rng(1).integers(0, 2**16, 32 << 20, dtype=np.uint16)  # 64 MiB
    (tmp_path / "ir").mkdir()
    (tmp_path / "ir" / "w.bin").write_bytes(data.tobytes())
    (tmp_path / "other.bin").write_bytes(data.tobytes())
    other = np.memmap(tmp_path / "other.bin", dtype=np.uint16, mode="r")
    cow = np.memmap(tmp_path / "ir" / "w.bin", dtype=np.uint16, mode="c")
    cow[:4096] = 1  # written: these pages are private copies now
    base = _rss_file_mib()
    with pages_dropped_while(tmp_path / "ir", interval=0.01) as stats:
        ro = np.memmap(tmp_path / "ir" / "w.bin", dtype=np.uint16, mode="r")  # mapped inside, as a runtime does
        copy = np.empty_like(data)
        peak = 0.0
        for i in range(0, ro.size, 1 << 20):  # a copy, 2 MiB at a time, a pause every 16 MiB
            copy[i:i + (1 << 20)] = ro[i:i + (1 << 20)]
            peak = max(peak, _rss_file_mib() - base)
            if i % (8 << 20) == 0:
                time.sleep(0.05)
        int(other.sum(dtype=np.uint64))  # another file, read in full inside the window
    assert stats["ticks"] >= 2 and stats["calls"] >= 1
    assert peak < 40, peak  # never the whole 64 MiB file resident next to its copy
    assert np.array_equal(copy, data)
    after = _rss_file_mib()
    assert after - base < 64 + 16, (base, after)  # the other file's 64 MiB, not w.bin's too
    assert int(ro.sum(dtype=np.uint64)) == int(data.sum(dtype=np.uint64))  # refaults unchanged
    assert (cow[:4096] == 1).all() and np.array_equal(cow[4096:], data[4096:])  # the writable mapping kept
