"""Run one command in a child process and report its wall time and peak RSS (the child tree's max).

    python benchmarks/measure.py -- aipc export ortgenai dml-int4

Peak RSS comes from os.wait4 on that one child: ru_maxrss of the child and of the descendants it
waited for (the largest resident set in its tree), which is what decides whether a stage fits in
memory. Not getrusage(RUSAGE_CHILDREN): that is a high-water mark over *every* child this process
ever waited for, so a second measurement in the same script would report the first one's peak.
Keep the calling process small: Linux carries the old address space's high-water mark across
exec, so a child started from a big parent reports at least the parent's peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b * x`` (peak RSS is linear in layers); returns ``(a, b)``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def measure(cmd: list[str], **kw) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    wall = time.perf_counter() - t0
    return {"cmd": cmd, "returncode": proc.returncode, "wall_s": round(wall, 2),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3)}  # Linux: KiB


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    print(json.dumps(measure(args, stdout=subprocess.DEVNULL)))
