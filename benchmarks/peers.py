"""Our rebuild vs the seed's commands, one by one, on the same model in one run (issue: performance).

Peers (each a fresh process, timed with /usr/bin/time: wall seconds and max RSS):
  optimum-cli export openvino ... --weight-format int4 --group-size G --ratio R --sym
  optimum-cli export openvino ... --weight-format fp16
  python -m onnxruntime_genai.models.builder ... -p int4 -e dml  (and -p fp16)
  intel-npu-acceleration-library NPUModelForCausalLM.from_pretrained(...) in the NPU environment
Ours: `dvc repro` of the same artifacts' stages in a fresh workspace (download and calibration included),
per-stage wall time and peak RSS read from metrics/cost/; with --jobs N, `aipc repro -j N` of them instead
(DVC's own `dvc repro --single-item` per stage, independent stages side by side when they fit in memory).

Usage (embedded model, ~10 min on 2 cores):  python benchmarks/peers.py [--workdir DIR]
At Phi-3-mini layer shapes (N real-width layers, random weights):  python benchmarks/peers.py --scale-layers 4
Several layer counts, fitted and extrapolated to the real 32:  python benchmarks/peers.py --scale-layers 2 4 8
Prints the wall-time ratio (ours / peers' sum) and each artifact's peak-RSS ratio. The OpenVINO INT4 of
the params may be data-aware (GPTQ etc.), which the seed's round-to-nearest command is not: the script
says so in the table, and also reports ours for the same round-to-nearest settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from measure import fit_line  # benchmarks/, this script's own directory
from scale import REAL_LAYERS, profile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict, cwd: Path) -> dict:
    os.sync()  # flush dirty pages first, so no run pays for the previous one's writeback
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "AIPC_TIME %e %M", *cmd], env=env, cwd=cwd, capture_output=True,
                       text=True)
    line = next((ln for ln in reversed(r.stderr.splitlines()) if ln.startswith("AIPC_TIME")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    _, wall, kib = line.split()
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(int(kib) / 1024), "sync_s": round(sync_time(), 1)}


def sync_time() -> float:
    """How long writing back what the run left dirty takes (not in its wall time, as the next run starts
    clean): reported too, so that both sides can also be compared to outputs on disk."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def compare(profile: Path, work: Path, env: dict, skip_fresh: bool, jobs: int = 1) -> dict:
    """One run on one model: our repro, then the peers; prints the table and returns the totals."""
    # ours first: the workspace also materializes the source checkpoint the peers read
    def our_repro(ws: Path, run_env: dict) -> tuple[float, dict, dict, float]:
        subprocess.run([str(BIN / "aipc"), "workspace", "init", str(ws), "--profile", str(profile)], check=True,
                       env=run_env, cwd=ROOT, capture_output=True)
        params = yaml.safe_load((ws / "params.yaml").read_text())
        os.sync()  # as timed() does for the peers
        t0 = time.perf_counter()
        cmd = ([str(BIN / "dvc"), "repro", "--single-item"] if jobs == 1
               else [str(BIN / "aipc"), "repro", "--jobs", str(jobs), "--summary", str(ws / "repro.json")])
        r = subprocess.run([*cmd, *stages(params)], cwd=ws, env=run_env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
        return (wall, {p.stem: json.loads(p.read_text()) for p in (ws / "metrics" / "cost").glob("*.json")}, params,
                sync_time())

    def stages(params: dict) -> list[str]:
        npu_key = next(iter(params["npu"]["variants"]))
        # calibration: a dep of every OpenVINO INT4 stage in dvc.yaml, data-aware or not
        return ["download", "calibration", "export-openvino-base", "export-openvino@int4", "export-openvino@fp16",
                "export-ortgenai@dml-int4", "export-ortgenai@dml-fp16", f"export-npu@{npu_key}"]

    ws = work / "ws"
    ours_wall, cost, params, ours_sync = our_repro(ws, env)
    ov4 = params["openvino"]["variants"]["int4"]
    npu_key, npu_variant = next(iter(params["npu"]["variants"].items()))
    # the same repro with every stage in a fresh process (AIPC_WORKER=0: the import of the toolchain per stage)
    fresh_wall = fresh_cost = None
    if not skip_fresh:
        fresh_wall, fresh_cost, _, _ = our_repro(work / "ws-fresh", dict(env, AIPC_WORKER="0"))
        shutil.rmtree(work / "ws-fresh", ignore_errors=True)

    # ours again for the seed's round-to-nearest INT4 (a stage of its own, run by DVC like the others), so that
    # row compares like with like
    rtn = dict(ov4)
    for k in ("gptq", "awq", "scale_estimation", "lora_correction", "dataset", "num_samples"):
        rtn.pop(k, None)
    params["openvino"]["variants"]["int4-rtn"] = rtn
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.sync()
    r = subprocess.run([str(BIN / "dvc"), "repro", "--single-item", "export-openvino@int4-rtn"], cwd=ws, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    rtn_cost = json.loads((ws / "metrics" / "cost" / "export-openvino-int4-rtn.json").read_text())

    src = ws / "artifacts" / "source"
    peers_dir = work / "peers"
    shutil.rmtree(peers_dir, ignore_errors=True)
    peers_dir.mkdir()

    ov_cli = [str(BIN / "optimum-cli"), "export", "openvino", "--model", str(src), "--task", "text-generation-with-past"]
    peer = {
        "openvino-int4": timed(ov_cli + ["--weight-format", "int4", "--group-size", str(ov4["group_size"]),
                                              "--ratio", str(ov4["ratio"]), *(["--sym"] if ov4["sym"] else []),
                                              str(peers_dir / "ov-int4")], env, work),
        "openvino-fp16": timed(ov_cli + ["--weight-format", "fp16", str(peers_dir / "ov-fp16")], env, work),
    }
    for key in ("dml-int4", "dml-fp16"):
        v = params["ortgenai"]["variants"][key]
        extra = [f"{k}={str(v[k]).lower()}" for k in ("block_size", "accuracy_level", "is_symmetric") if k in v]
        peer[f"ortgenai-{key}"] = timed(
            [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(peers_dir / key),
             "-p", v["precision"], "-e", v["execution_provider"], "-c", str(peers_dir / f"cache-{key}")]
            + (["--extra_options", *extra] if extra else []), env, work)
    npu_python = ROOT / params["npu"]["env_dir"] / "bin" / "python"
    code = ("import intel_npu_acceleration_library as npu, torch, sys\n"
            "from intel_npu_acceleration_library.compiler import CompilerConfig\n"
            f"dt = {{'int4': npu.int4, 'int8': npu.int8}}[{npu_variant['dtype']!r}]\n"
            "m = npu.NPUModelForCausalLM.from_pretrained(sys.argv[1], use_cache=True, config=CompilerConfig(dtype=dt), "
            "export=False)\n")
    peer[f"npu-{npu_key}"] = timed([str(npu_python), "-c", code, str(src)], dict(env, PYTHONPATH=""), work)

    ours = {
        "openvino-int4": cost["export-openvino-int4"], "openvino-fp16": cost["export-openvino-fp16"],
        "ortgenai-dml-int4": cost["export-ortgenai-dml-int4"], "ortgenai-dml-fp16": cost["export-ortgenai-dml-fp16"],
        f"npu-{npu_key}": cost[f"export-npu-{npu_key}"],
    }
    peers_sum = sum(p["wall_s"] for p in peer.values())
    print(f"{'artifact':22} {'peer wall s':>11} {'ours wall s':>11} {'peer RSS MiB':>12} {'ours RSS MiB':>12} {'RSS ratio':>9}")
    for name, p in peer.items():
        o = ours[name]
        print(f"{name:22} {p['wall_s']:>11.1f} {o['wall_s']:>11.1f} {p['peak_rss_mib']:>12} {o['peak_rss_mib']:>12.0f} "
              f"{o['peak_rss_mib'] / p['peak_rss_mib']:>9.2f}")
    print(f"{'openvino-int4 (RTN)':22} {peer['openvino-int4']['wall_s']:>11.1f} {rtn_cost['wall_s']:>11.1f} "
          f"{peer['openvino-int4']['peak_rss_mib']:>12} {rtn_cost['peak_rss_mib']:>12} "
          f"{rtn_cost['peak_rss_mib'] / peer['openvino-int4']['peak_rss_mib']:>9.2f}")
    base = cost["export-openvino-base"]
    print(f"{'openvino-base (shared)':22} {'':>11} {base['wall_s']:>11.1f} {'':>12} {base['peak_rss_mib']:>12.0f} "
          f"{base['peak_rss_mib'] / max(peer['openvino-int4']['peak_rss_mib'], peer['openvino-fp16']['peak_rss_mib']):>9.2f}"
          "  (vs the larger OpenVINO peer: each peer traces too)")
    stages_s = sum(c["wall_s"] for c in cost.values())  # read before the RTN run: not in it
    how = "`dvc repro`" if jobs == 1 else f"`aipc repro -j {jobs}`"
    print(f"\npeers' summed wall time {peers_sum:.1f} s; our {how} of the same artifacts {ours_wall:.1f} s "
          f"(incl. download and calibration; the stages {stages_s:.1f} s summed, "
          f"forked from the warm worker): ratio {ours_wall / peers_sum:.2f}")
    if fresh_wall is not None:
        print(f"the same repro with every stage in a fresh process (AIPC_WORKER=0): {fresh_wall:.1f} s "
              f"(the stages {sum(c['wall_s'] for c in fresh_cost.values()):.1f} s): ratio {fresh_wall / peers_sum:.2f}; "
              f"the worker: x{ours_wall / fresh_wall:.2f}")
    # like for like: the seed's round-to-nearest INT4 instead of our data-aware default (and no calibration stage)
    data_aware = cost["export-openvino-int4"]["wall_s"] + (cost["calibration"]["wall_s"] if "calibration" in cost else 0)
    same = ours_wall - data_aware + rtn_cost["wall_s"]
    peers_durable = peers_sum + sum(p["sync_s"] for p in peer.values())
    ours_durable = ours_wall + ours_sync
    print(f"to outputs on disk (each run's writeback, `sync`, added): peers {peers_durable:.1f} s "
          f"(writeback {peers_durable - peers_sum:.1f} s), ours {ours_durable:.1f} s (writeback {ours_sync:.1f} s): "
          f"ratio {ours_durable / peers_durable:.2f}")
    if data_aware and jobs == 1:
        print(f"with the seed's round-to-nearest INT4 (ours {rtn_cost['wall_s']:.1f} s instead of {data_aware:.1f} s): "
              f"{same:.1f} s, ratio {same / peers_sum:.2f}")
    elif jobs > 1:  # side by side, a stage's wall time is not what the whole would lose without it
        same = None
    stage_costs = {k: {"wall_s": v["wall_s"], "cpu_s": v.get("cpu_s")} for k, v in cost.items()}
    schedule = json.loads((ws / "repro.json").read_text()) if jobs > 1 else None
    if schedule:
        print("\nour schedule (s after the start; * = beside another stage):")
        spans = {st["name"]: (st["start_s"], st["start_s"] + st["wall_s"]) for st in schedule["stages"]}
        for name, (a, b) in spans.items():
            beside = any(o != name and min(b, ob) - max(a, oa) > 0.5 for o, (oa, ob) in spans.items())
            print(f"  {name:28} {a:7.1f} -> {b:7.1f}{'  *' if beside else ''}")
    return {"peers_s": peers_sum, "ours_s": ours_wall, "ours_rtn_s": same, "peers_durable_s": peers_durable,
            "ours_durable_s": ours_durable, "stages": stage_costs,
            "peers": {k: v["wall_s"] for k, v in peer.items()}, "schedule": schedule}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=ROOT / "configs" / "embedded.yaml")
    ap.add_argument("--skip-fresh", action="store_true",
                    help="do not also run our repro with every stage in a fresh process (AIPC_WORKER=0)")
    ap.add_argument("--scale-layers", type=int, nargs="+", default=None, metavar="N",
                    help="instead of the profile: a random-weight Phi-3-mini-4k with N real-width layers "
                         "(benchmarks/scale.py's checkpoint and profile, INT4 round-to-nearest as the seed's command); "
                         "with several N, each is run in turn and both totals are fitted as a + b * layers and "
                         f"extrapolated to the real {REAL_LAYERS}")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="ours by `aipc repro -j N` (stages side by side when they fit in memory) instead of `dvc repro`")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aipc-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               DVC_NO_ANALYTICS="1", TQDM_DISABLE="1")
    if not args.scale_layers:
        compare(args.profile, work, env, args.skip_fresh, args.jobs)
        print(f"workdir: {work}")
        return

    from aipc.pipeline.sources.embedded import embedded_checkpoint

    env["AIPC_SKIP_MEMORY_CHECK"] = "1"  # measuring: never refuse
    runs: dict[int, dict] = {}
    for layers in args.scale_layers:
        run_dir = work / f"layers{layers}"
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = run_dir / f"ckpt{layers}"
        subprocess.run([sys.executable, str(Path(__file__).parent / "ortgenai_memory.py"), "--make", str(ckpt),
                        str(layers), str(embedded_checkpoint())], check=True, env=env)
        prof = run_dir / "profile.yaml"
        prof.write_text(yaml.safe_dump(profile(ckpt, data_free_int4=True), sort_keys=False))
        print(f"\n== {layers} Phi-3-mini layers ==")
        runs[layers] = compare(prof, run_dir, env, args.skip_fresh, args.jobs)
        if len(args.scale_layers) > 1:  # keep the disk for the next run
            shutil.rmtree(run_dir, ignore_errors=True)
    if len(runs) > 1:
        # (ours, the peers' total it is compared with)
        pairs = [("ours_s", "peers_s"), ("ours_durable_s", "peers_durable_s")]
        if all(r["ours_rtn_s"] is not None for r in runs.values()):
            pairs.insert(1, ("ours_rtn_s", "peers_s"))
        keys = list(dict.fromkeys(k for pair in pairs for k in pair))
        fits = {k: fit_line([(n, r[k]) for n, r in runs.items()]) for k in keys}
        at = {k: a + b * REAL_LAYERS for k, (a, b) in fits.items()}
        print(f"\n{'layers':>6} " + " ".join(f"{o:>14} {p:>15} {'ratio':>5}" for o, p in pairs))
        for layers, r in [*runs.items(), (REAL_LAYERS, at)]:
            print(f"{layers:>6} " + " ".join(f"{r[o]:>14.1f} {r[p]:>15.1f} {r[o] / r[p]:>5.2f}" for o, p in pairs)
                  + ("  (fitted a + b * layers)" if r is at else ""))
        for k, (a, b) in fits.items():
            print(f"{k}: {a:.1f} s + {b:.2f} s/layer")
        (work / "runs.json").write_text(json.dumps(runs, indent=1))
    print(f"workdir: {work}")


if __name__ == "__main__":
    main()
