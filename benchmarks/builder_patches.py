"""Does each patch the export makes to the ORT GenAI builder still pay? Time the builder's call on one
checkpoint with and without the patch, alternating, in fresh processes; report the median ratio.

    python benchmarks/builder_patches.py --source artifacts/source --variant dml-fp16 --repeats 3

``--source`` is a downloaded checkpoint folder (``artifacts/source`` of a workspace), ``--variant`` an
``ortgenai.variants`` key of ``--params`` (default: params.yaml). The patch measured is
``layers_without_random_init`` (pipeline/compat/ortgenai_builder.py); the INT4 graph spill is a memory
fix, measured by benchmarks/ortgenai_memory.py. Both arms run the same call (``run_builder``); the ratio
is patched / unpatched wall time of the child, so the machine's noise between pairs cancels out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measure  # noqa: E402

CHILD = """
import sys, contextlib
from pathlib import Path
from aipc.pipeline.config import load_params
from aipc.pipeline.compat.ortgenai_builder import layers_without_random_init
from aipc.pipeline.export.ortgenai import run_builder
params, source, key, out, patched = sys.argv[1:]
variant = load_params(params).ortgenai.variants[key]
with (layers_without_random_init() if patched == "1" else contextlib.nullcontext()):
    run_builder(key, variant, Path(source), Path(out), Path(out) / ".cache")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--variant", default="dml-fp16")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="builder-patches-") as tmp:
        for i in range(args.repeats):
            pair = {}
            for patched in ("0", "1") if i % 2 == 0 else ("1", "0"):
                out = Path(tmp) / f"{i}-{patched}"
                r = measure([sys.executable, "-c", CHILD, str(args.params), str(args.source), args.variant, str(out),
                             patched], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r["returncode"] != 0:
                    print(json.dumps(r), file=sys.stderr)
                    return 1
                pair[patched] = r["wall_s"]
            rows.append({"unpatched_s": pair["0"], "patched_s": pair["1"], "ratio": round(pair["1"] / pair["0"], 3)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"variant": args.variant, "repeats": args.repeats,
                      "median_unpatched_s": statistics.median(r["unpatched_s"] for r in rows),
                      "median_patched_s": statistics.median(r["patched_s"] for r in rows),
                      "median_ratio": statistics.median(r["ratio"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
