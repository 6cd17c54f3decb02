"""Run one command in a child process and report its wall time and peak RSS (the child tree's max).

    python benchmarks/measure.py -- aipc export ortgenai dml-int4

Peak RSS comes from getrusage(RUSAGE_CHILDREN).ru_maxrss: the largest resident set of any
descendant, which is what decides whether a stage fits in memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def measure(cmd: list[str], **kw) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, **kw)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"cmd": cmd, "returncode": r.returncode, "wall_s": round(wall, 2), "peak_rss_gib": round(peak_kib / 2**20, 3)}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    print(json.dumps(measure(args, stdout=subprocess.DEVNULL)))
