"""Run one command and report the most disk it held at once, and what it left behind.

    python benchmarks/disk_peak.py --path /tmp -- bash scripts/test.sh -q

Samples the used bytes of the file system holding ``--path`` (``shutil.disk_usage``) every
``--every`` seconds while the command runs. The baseline is the reading just before the command starts,
in the same run, so the numbers are deltas: ``peak_gib`` is the largest extra space the command held at
one time, ``left_gib`` what was still used after it exited (caches and kept temporary folders). Anything
else writing to the same file system in that time is counted too: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import threading
import time


def used(path: str) -> int:
    return shutil.disk_usage(path).used


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="/tmp", help="a folder on the file system to watch (default /tmp)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the command to run after --")

    base = used(args.path)
    peak = [base, 0.0]
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not done.wait(args.every):
            now = used(args.path)
            if now > peak[0]:
                peak[:] = [now, time.perf_counter() - t0]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = subprocess.call(cmd)
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    gib = 2**30
    print(json.dumps({"cmd": cmd, "returncode": rc, "wall_s": round(wall, 1),
                      "peak_gib": round((peak[0] - base) / gib, 2), "peak_at_s": round(peak[1]),
                      "left_gib": round((used(args.path) - base) / gib, 2),
                      "free_before_gib": round(shutil.disk_usage(args.path).free / gib + (used(args.path) - base) / gib, 1)}))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
