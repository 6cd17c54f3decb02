"""Filesystem helpers: atomic output directories, hashing, deterministic JSON."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)



def file_digest(path: str | os.PathLike, algorithm: str | Callable[[], Any]) -> str:
    """Hex digest of a file's bytes (``hashlib.file_digest``: read in chunks, never whole into memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def file_table(root: str | os.PathLike, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` of every file under ``root``, sorted."""
    root = Path(root)
    table: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel in exclude:
            continue
        table[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return table


def dump_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump_json(obj))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are shared and published
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp directory beside ``final``; on success replace ``final`` with it.

    On any exception (including KeyboardInterrupt) the temp directory is removed and ``final`` is
    left as it was. A process killed with SIGKILL leaves only a ``.<name>.tmp-*`` directory, which
    is never picked up as an artifact and is swept by the next run for the same output.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        log.debug("removing stale temp dir %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700
    try:
        yield tmp
    except BaseException as err:
        written = dir_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_cause(err)
        if full is not None:
            from .errors import EnvironmentProblem

            free = shutil.disk_usage(final.parent).free
            raise EnvironmentProblem(
                f"{final}: the disk filled up while writing it ({full}; {written / (1 << 20):.1f} MiB were written, "
                f"{free / (1 << 30):.2f} GiB free now on the file system of {final.parent.resolve()}); the partial "
                "output was removed",
                fix="free disk space there (or raise the file-size limit: `ulimit -f`), then run the stage again",
            ) from None
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.tmp-old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class MappedPages:
    """Drop a memory-mapped file's pages from this process once they are read for the last time.

    Resident pages of a mapped file count in the process's RSS until the file is unmapped, which
    happens only when the last tensor or model on the mapping is destroyed: converting every weight
    of a mapped model (a bf16 IR to f16, a bf16 checkpoint to fp32) would hold the old and the new
    weights at once (2 Phi-3-mini layers, the OpenVINO FP16 conversion: 1388 MiB vs 381 MiB with
    this). ``madvise(MADV_DONTNEED)`` on the whole pages inside a range that lies in a read-only or a
    private mapping of one of ``paths`` (checked in /proc/self/maps) releases them; a later read
    faults them in from the file again, so a weight that was not written reads back unchanged. Call
    it only on data that is no longer needed or was never written. Elsewhere (an anonymous or shared
    writable mapping, no /proc, no libc) it does nothing.
    """

    MADV_DONTNEED = 4

    def __init__(self, *paths: str | os.PathLike):
        self.ranges: list[tuple[int, int]] = []
        self.madvise = None
        try:
            self.ranges = _file_mappings(tuple(Path(p).resolve() for p in paths), private_writable=True)
            self.madvise = _libc_madvise()
        except (OSError, AttributeError):
            self.ranges = []

    def release(self, addr: int, nbytes: int) -> int:
        """Drop the whole pages inside ``[addr, addr + nbytes)``; the bytes dropped (0 outside the mappings)."""
        import mmap

        if not self.ranges or self.madvise is None:
            return 0
        page = mmap.PAGESIZE
        start, end = -(-addr // page) * page, (addr + nbytes) // page * page
        if end > start and any(lo <= start and end <= hi for lo, hi in self.ranges):
            if self.madvise(start, end - start, self.MADV_DONTNEED) == 0:
                return end - start
        return 0

    def __call__(self, array) -> int:
        """``release`` of a numpy array's bytes."""
        return self.release(array.ctypes.data, array.nbytes)


MADV_PAGEOUT = 21  # linux/mman.h, 5.4+


def _libc_madvise():
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def _file_mappings(roots: tuple[Path, ...], *, private_writable: bool) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of a file that is one of ``roots`` or lies under one:
    read-only mappings, and with ``private_writable`` also private (copy-on-write) writable ones."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        perms, path = parts[1], parts[5]
        if "w" in perms and not (private_writable and perms[3] == "p"):
            continue
        if any(path == str(r) or path.startswith(str(r) + os.sep) for r in roots):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi))
    return out


@contextlib.contextmanager
def pages_dropped_while(*roots: str | os.PathLike, interval: float = 0.05) -> Iterator[dict[str, int]]:
    """While the body runs (a runtime compiling a model it has memory-mapped), drop this process's
    resident pages of every *read-only* mapping of a file under ``roots``, every ``interval`` seconds.

    A runtime that maps a weights file and copies the weights into its own layout while compiling
    (OpenVINO's CPU plugin reading ``openvino_model.bin``, or a cached blob) keeps every page it has
    read resident until the file is unmapped, which for optimum's ``OVModelForCausalLM`` is never:
    the compiled copy and the file add up (validate of the FP16 IR at 2 Phi-3-mini layers: 2522 MiB
    peak, 1515 with this; logits bit-identical). The pages are reclaimed with ``madvise(MADV_PAGEOUT)``
    (Linux 5.4+), which never loses data, whatever the range holds: the mappings are found in
    /proc/self/maps while the runtime's threads go on, so a range may have been unmapped and reused
    (say, by malloc) before the call, where ``MADV_DONTNEED`` would zero someone's memory. A read-only
    file page is dropped and read again from the file if needed; anonymous memory could only go to
    swap. Writable mappings are never chosen. Yields counters (``ticks``, ``calls``). Without /proc,
    libc or MADV_PAGEOUT it does nothing."""
    import threading

    stats = {"ticks": 0, "calls": 0}
    try:
        madvise = _libc_madvise()
        resolved = tuple(Path(r).resolve() for r in roots)
        _file_mappings(resolved, private_writable=False)
    except (OSError, AttributeError):
        yield stats
        return
    stop = threading.Event()

    def drop() -> None:
        stopped = False
        while not stopped:
            stopped = stop.wait(interval) if stats["ticks"] else False  # one last pass after the body
            try:
                for lo, hi in _file_mappings(resolved, private_writable=False):
                    stats["calls"] += madvise(lo, hi - lo, MADV_PAGEOUT) == 0
            except OSError:
                return
            stats["ticks"] += 1

    thread = threading.Thread(target=drop, name="aipc-page-dropper", daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join()


class SafetensorsError(ValueError):
    """A file that is not a whole safetensors file; the message says what is wrong (no path)."""


def safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """The tensor entries of a safetensors file's JSON header (dtype, shape, data_offsets), no tensor read.

    Checks what the header lets one check without reading the data: the header length is sane and the
    file is exactly as long as the header says (catches truncated downloads and non-safetensors
    files); raises :class:`SafetensorsError` otherwise."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"truncated ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise SafetensorsError("not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SafetensorsError("corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise SafetensorsError("corrupt safetensors header")
    header.pop("__metadata__", None)
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise SafetensorsError("corrupt safetensors header (a tensor without data_offsets)") from None
    if 8 + n + end != size:
        raise SafetensorsError(f"truncated or padded: {size} bytes on disk, header describes {8 + n + end}")
    return header


def dir_size(root: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left on device", "File too large", "Disk quota exceeded")


def disk_full_cause(err: BaseException) -> str | None:
    """The disk-full error (ENOSPC, EFBIG from a file-size limit, EDQUOT) in ``err``'s chain, if any.

    Exporters wrap errors of the libraries they call, and C++ writers (OpenVINO, ONNX) report them
    only as text, so the chain and the messages are both searched.
    """
    seen = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _DISK_FULL_ERRNOS:
            return f"{os.strerror(cur.errno)} [errno {errno.errorcode[cur.errno]}]"
        text = str(cur)
        for needle in _DISK_FULL_TEXT:
            if needle in text:
                return needle
        cur = cur.__cause__ or cur.__context__
    return None
