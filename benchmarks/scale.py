"""Scale run: a random-weight Phi-3-mini-4k (the real config's shapes: hidden 3072, 32 heads, FFN 8192,
bf16 as the Hub ships it) through the pipeline's stages, one at a time (`dvc repro`), recording each
stage's wall time and peak RSS (its `metrics/cost/*.json`, children included).

    .venv/bin/python benchmarks/scale.py                      # all 32 layers (3.9B parameters), every stage
    .venv/bin/python benchmarks/scale.py --layers 2 4         # 2 and 4 layers, fitted and extrapolated to 32
    .venv/bin/python benchmarks/scale.py --layers 2 4 --targets export-openvino reference
    .venv/bin/python benchmarks/scale.py --layers 2 4 --data-free-int4  # every stage, INT4 round-to-nearest

With several layer counts, each stage's peak is fitted as a + b * layers (peak RSS is linear in layers:
the 2-4 layer line predicted 8 layers within 0.02 GiB) and extrapolated to the real 32. The vocabulary
is the embedded tokenizer's 49152 (Phi-3's is 32064), so the model is 3.9B, not 3.8B, parameters: the
table errs on the heavy side. Gates are opened (random weights have no accuracy to gate); the release
params are used otherwise. The checkpoint is written directly in bf16 (one fp32 tensor at a time).
Prints a Markdown table; --json writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from measure import fit_line  # noqa: E402

REAL_LAYERS = 32
TARGET_GIB = 16.0
OPEN_GATES = {"max_ppl_ratio": 100, "min_top1_agreement": 0.0, "max_kl_mean": 50, "max_kl_p99": 100,
              "min_tokenizer_agreement": 0.0, "min_prefix_agreement": 0.0, "smoke_must_pass": False}


# --data-free-int4: the INT4 variant round-to-nearest (as the seed's optimum-cli command), so the stages
# after it can be measured without the data-aware export's hours; its peak is measured on its own
DATA_FREE_INT4 = {"gptq": False, "scale_estimation": False, "awq": False, "lora_correction": False, "dataset": None,
                  "num_samples": None}


def profile(ckpt: Path, data_free_int4: bool = False) -> dict:
    prof = {
        "model": {"name": "phi-3-mini-4k-random", "source": "local", "path": str(ckpt), "repo_id": None,
                  "revision": None},
        "smoke": {"max_repeat_ngram_ratio": 1.0},
        "validation": {"gates": {"default": OPEN_GATES, "variants": None}},
    }
    if data_free_int4:
        prof["openvino"] = {"variants": {"int4": DATA_FREE_INT4}}
    return prof


def run_at(layers: int, work: Path, targets: list[str], env: dict, data_free_int4: bool = False) -> dict[str, dict]:
    """One workspace on a ``layers``-layer checkpoint; ``dvc repro`` of ``targets``; the cost metrics."""
    from aipc.pipeline.sources.embedded import embedded_checkpoint

    ckpt = work / f"ckpt{layers}"
    # built in a child: it holds GBs of tensors, and a child inherits its parent's RSS high-water mark at exec
    subprocess.run([sys.executable, str(Path(__file__).parent / "ortgenai_memory.py"), "--make", str(ckpt),
                    str(layers), str(embedded_checkpoint())], check=True, env=env)
    prof = work / f"profile{layers}.yaml"
    prof.write_text(yaml.safe_dump(profile(ckpt, data_free_int4), sort_keys=False))
    ws = work / f"ws{layers}"
    subprocess.run([str(BIN / "aipc"), "-q", "workspace", "init", str(ws), "--profile", str(prof)], check=True,
                   env=env, cwd=ROOT)
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN / "dvc"), "repro", *targets], cwd=ws, env=env, text=True, capture_output=True)
    print(f"# {layers} layers: dvc repro {' '.join(targets) or '(all)'} exit {r.returncode} in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    if r.returncode != 0:
        print(r.stdout[-3000:] + r.stderr[-3000:], file=sys.stderr)
    return {p.stem: json.loads(p.read_text()) for p in sorted((ws / "metrics" / "cost").glob("*.json"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[REAL_LAYERS])
    ap.add_argument("--targets", nargs="*", default=[], help="dvc repro targets (default: the whole pipeline)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir under the repo (not /tmp)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--data-free-int4", action="store_true",
                    help="the INT4 variant round-to-nearest (the seed's flags) instead of GPTQ + scale estimation")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1",
           "AIPC_SKIP_MEMORY_CHECK": "1",  # measuring the estimate's inputs: never refuse
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(dir=args.workdir or ROOT, prefix=".scale-") as tmp:
        by_layers = {n: run_at(n, Path(tmp) / f"l{n}", args.targets, env, args.data_free_int4)
                     for n in sorted(args.layers)}
    stages = sorted({s for costs in by_layers.values() for s in costs})
    rows = []
    for stage in stages:
        pts = [(n, c[stage]) for n, c in by_layers.items() if stage in c]
        rss = [(n, c["peak_rss_mib"] / 1024) for n, c in pts]
        wall = [(n, c["wall_s"]) for n, c in pts]
        if len(pts) > 1:
            (a, b), (wa, wb) = fit_line(rss), fit_line(wall)
            # wall time is noisy on shared cores: never extrapolate below the slowest measured run
            peak, secs = a + b * REAL_LAYERS, max(wa + wb * REAL_LAYERS, max(w for _, w in wall))
            how = f"fit on {', '.join(str(n) for n, _ in pts)} layers"
        else:
            peak, secs, how = rss[-1][1], wall[-1][1], f"measured at {pts[-1][0]} layers"
        rows.append({"stage": stage, "peak_gib": round(peak, 2), "wall_s": round(secs, 1), "basis": how,
                     "measured": {n: {"peak_gib": round(g, 2), "wall_s": w} for (n, g), (_, w) in zip(rss, wall)}})
    print(f"\n| stage | peak RSS at {REAL_LAYERS} layers | wall | basis | <= {TARGET_GIB:.0f} GiB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['peak_gib']:.2f} GiB | {r['wall_s']:.0f} s | {r['basis']} | "
              f"{'yes' if r['peak_gib'] <= TARGET_GIB else '**no**'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
