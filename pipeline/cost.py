"""Per-stage cost: wall time, CPU time and peak RSS (this process and its children) as a DVC metric.

``aipc --cost-metrics metrics/cost/<stage>.json <command>`` (what every stage in dvc.yaml runs)
measures the command and writes the file only when it succeeds; ``aipc report`` shows the files
next to the validation metrics. Peak RSS comes from ``getrusage``: ``ru_maxrss`` of this process and
the largest of its waited-for children (the NPU-library worker, the ORT GenAI / OpenVINO helpers),
including those a stage worker forked for it (``add_remote_child``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .fsutil import write_json
from .records import CostRecord, Machine

log = logging.getLogger(__name__)

# Processes this one started through a worker of another environment (aipc.worker.start_process: the NPU
# environment's helper) are the worker's children, not ours, so getrusage(RUSAGE_CHILDREN) cannot see them:
# the worker reports their rusage with their exit status, and it is counted here as a child's.
_remote = {"maxrss_kib": 0, "cpu_s": 0.0}


# the device the stage's model ran on, as the backend chose it (a runner or the NPU compile notes it); the
# conversions themselves run on the CPU
_device: dict[str, str] = {}


def note_device(device: str) -> None:
    """Record the device the current stage's model runs on, for its closing line."""
    _device["used"] = device


def add_remote_child(maxrss_kib: int, cpu_s: float) -> None:
    _remote["maxrss_kib"] = max(_remote["maxrss_kib"], int(maxrss_kib))
    _remote["cpu_s"] += float(cpu_s)


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)  # Linux reports ru_maxrss in KiB


def machine() -> dict[str, Any]:
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "mem_total_gib": total}


@contextlib.contextmanager
def measure(stage: str, out: Path | None) -> Iterator[None]:
    """Measure the body; write ``out`` (if given) when it returns normally."""
    t0, c0, remote_cpu0 = time.perf_counter(), os.times(), _remote["cpu_s"]
    yield
    if out is None:
        return
    record_imports(stage)
    c1 = os.times()
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, _remote["maxrss_kib"])
    record = CostRecord(
        stage=stage,
        wall_s=round(time.perf_counter() - t0, 2),
        cpu_s=round((c1.user - c0.user) + (c1.system - c0.system)
                    + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
                    + (_remote["cpu_s"] - remote_cpu0), 2),
        peak_rss_mib=_mib(max(self_rss, child_rss)),
        peak_rss_self_mib=_mib(self_rss),
        peak_rss_children_mib=_mib(child_rss),
        machine=Machine(**machine()),
        # forked from this repro's warm worker (aipc.worker): the toolchain's import is not in wall_s
        process="worker-fork" if os.environ.get("AIPC_WORKER_CHILD") else "fresh",
    )
    record.write(out)
    log.info("stage %s: %.1f s, peak RSS %.0f MiB, device %s", stage, record.wall_s, record.peak_rss_mib,
             _device.get("used", "CPU"))


REPO_ROOT = Path(__file__).resolve().parent.parent
IMPORTS_DIR = Path(".dvc") / "tmp" / "aipc-imports"  # per stage, in the workspace (not an output)


def project_modules() -> list[str]:
    """The repository's source files this process has imported (as paths relative to the repository):
    what a stage's code really is, for the check that dvc.yaml lists it (tests/test_pipeline_e2e.py)."""
    import sys

    out = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        try:
            rel = Path(f).resolve().relative_to(REPO_ROOT)
        except ValueError:
            continue
        if rel.parts[0] not in (".venv", ".venv-npu", "tests"):
            out.add(rel.as_posix())
    return sorted(out)


def record_imports(stage: str) -> None:
    """Write :func:`project_modules` to ``.dvc/tmp/aipc-imports/<stage>.json`` when run in a DVC project."""
    if Path(".dvc").is_dir():
        write_json(IMPORTS_DIR / f"{stage}.json", {"stage": stage, "modules": project_modules()})


def collect(metrics_dir: Path) -> list[CostRecord]:
    """Every stage's cost record under ``metrics_dir/cost``, by file name."""
    return [CostRecord.read(f) for f in sorted((Path(metrics_dir) / "cost").glob("*.json"))]
