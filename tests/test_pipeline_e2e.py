"""End to end: `dvc repro` of the real dvc.yaml on the embedded model, in a temporary workspace."""

from __future__ import annotations

import filecmp
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

DVC = str(Path(sys.executable).parent / "dvc")
ROOT = Path(__file__).resolve().parent.parent


ARTIFACTS = {"openvino": ("int4", "fp16", "npu-int4"), "ortgenai": ("dml-int4", "dml-fp16", "cpu-int4"),
             "npu": ("int8",)}


def dvc(ws, env, *args, timeout=1800):
    return subprocess.run([DVC, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_full_repro_builds_and_smokes_every_artifact(repro_workspace):
    ws, r, _ = repro_workspace
    assert r.returncode == 0, r.stdout[-6000:]
    expected = {"download", "report"} | {f"{s}-{b}@{v}" for s in ("export", "smoke")
                                          for b, vs in ARTIFACTS.items() for v in vs}
    assert expected <= set(ran_stages(r.stdout + r.stderr))
    # optimum-intel's format probe fails on a Path and says so after every OpenVINO load
    assert "Could not infer whether the model was already converted" not in r.stdout + r.stderr
    for backend, variant in [(b, v) for b, vs in ARTIFACTS.items() for v in vs]:
        m = json.loads((ws / "metrics" / "smoke" / f"{backend}-{variant}.json").read_text())
        assert m["passed"] and m["prompts_passed"] == m["prompts_total"] == 3
        capital = next(x for x in m["results"] if x["id"] == "capital")
        assert "Paris" in capital["text"]


PROGRESS = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")  # tqdm bars redraw the same text


def test_each_event_is_printed_once_and_each_stage_ends_with_its_cost_line(repro_workspace):
    """The log of `dvc repro`, as a user sees it (one stream): within a stage no line appears twice (progress
    bars aside), and each stage's output ends with one closing line: wall time, peak RSS and device."""
    _, r, _ = repro_workspace
    chunks: dict[str, list[str]] = {}
    stage = None
    for line in r.stdout.splitlines():
        m = re.search(r"Running stage '([^']+)'", line)
        if m:
            stage = m[1]
            chunks[stage] = []
        elif stage and line.strip() and not PROGRESS.search(line):
            chunks[stage].append(re.sub(r"^\d\d:\d\d:\d\d ", "", line))  # the log's time stamp
    assert len(chunks) > 20, list(chunks)
    repeated = {s: sorted({ln for ln in lines if lines.count(ln) > 1}) for s, lines in chunks.items()}
    repeated = {s: lines for s, lines in repeated.items() if lines}
    assert not repeated, "lines printed twice within a stage:\n" + "\n".join(
        f"  {s}: {ln[:160]}" for s, lines in repeated.items() for ln in lines)
    for s, lines in chunks.items():
        closing = [ln for ln in lines if re.search(r"INFO aipc\.pipeline\.cost: stage \S+: [\d.]+ s, peak RSS \d+ MiB, "
                                                   r"device \S", ln)]
        assert len(closing) == 1, (s, closing)


def test_effective_int4_settings_are_recorded(repro_workspace):
    ws, _, _ = repro_workspace
    rec = json.loads((ws / "artifacts/openvino/int4/aipc_export.json").read_text())
    eff = rec["effective"]
    assert eff["nncf"]["mode"] == "int4_sym" and eff["nncf"]["group_size"] == "64" and eff["nncf"]["ratio"] == "0.6"
    assert set(eff["int4_group_sizes"]) == {"64"}
    assert 0.3 < eff["weight_share_by_type"]["i4"] < 0.7
    assert rec["params"]["sym"] is True and rec["toolchain"]["openvino"].startswith("2026.4")
    # data-aware through DVC: AWQ on 8 of the calibration stage's windows (conftest.E2E_INT4; the release
    # default, GPTQ + scale estimation, is exported in test_calibration.py)
    assert (eff["nncf"]["awq"], eff["nncf"]["gptq"], eff["nncf"]["scale_estimation"]) == ("True", "False", "False")
    assert rec["algorithm"] == "awq"
    assert rec["calibration"]["samples_used"] == 8 and set(rec["calibration"]["texts"]) == {"apache2", "python_topics"}
    manifest = json.loads((ws / "artifacts/bundles/openvino-int4/manifest.json").read_text())
    assert manifest["quantization"]["algorithm"] == "awq"
    assert manifest["quantization"]["calibration"]["samples_used"] == 8
    assert "Algorithm: **awq**" in (ws / "artifacts/bundles/openvino-int4/README.md").read_text()
    fp16 = json.loads((ws / "artifacts/openvino/fp16/aipc_export.json").read_text())["effective"]
    assert fp16["nncf"] == {} and set(fp16["weight_share_by_type"]) == {"f16"}


def test_artifacts_load_with_openvino_genai_and_optimum(repro_workspace):
    import openvino_genai as ov_genai
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    ws, _, _ = repro_workspace
    for variant in ("int4", "fp16"):
        path = ws / "artifacts" / "openvino" / variant
        # what the bundle's card tells a user to pass: the CPU precision its smoke run was measured at
        # (left to OpenVINO it is bf16 on AVX512-BF16/AMX CPUs such as this one, f32 elsewhere)
        manifest = json.loads((ws / f"artifacts/bundles/openvino-{variant}/manifest.json").read_text())
        hint = manifest["validation"]["smoke"]["runtime"]["INFERENCE_PRECISION_HINT"]
        assert hint == "f32"
        card = (ws / f"artifacts/bundles/openvino-{variant}/README.md").read_text()
        assert f'"CPU", INFERENCE_PRECISION_HINT="{hint}")' in card
        assert f'ov_config={{"INFERENCE_PRECISION_HINT": "{hint}"}}' in card
        pipe = ov_genai.LLMPipeline(str(path), "CPU", INFERENCE_PRECISION_HINT=hint)
        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = 12
        out = pipe.generate("What is the capital of France?", cfg)  # the pipeline applies the template
        assert "Paris" in str(out)
        del pipe
        model = OVModelForCausalLM.from_pretrained(path, device="CPU", compile=True,
                                                   ov_config={"INFERENCE_PRECISION_HINT": hint})
        tok = AutoTokenizer.from_pretrained(path)
        ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                      add_generation_prompt=True, return_tensors="pt", return_dict=True)
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
        assert "Paris" in tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        del model


_MAPPED_PROBE = r"""
import contextlib, json, sys
from pathlib import Path
import aipc.validation.runners.openvino as ovr
from aipc.pipeline.config import load_params
if sys.argv[2] == "off":  # the control: what the runner did before
    ovr.pages_dropped_while = lambda *a, **k: contextlib.nullcontext()
folder = Path(sys.argv[1])
runner = ovr.OpenVINORunner(folder, load_params(Path("params.yaml")).openvino.runtime)
runner.logits(list(range(1, 64)))
runner.generate([{"role": "user", "content": "What is the capital of France?"}], 4)
rss, mapping = 0, False
for line in Path("/proc/self/smaps").read_text().splitlines():
    if "-" in line.split(" ")[0] and len(line.split()) >= 5:
        mapping = line.rstrip().endswith(str((folder / "openvino_model.bin").resolve()))
    elif mapping and line.startswith("Rss:"):
        rss += int(line.split()[1]) * 1024
print(json.dumps({"rss": rss, "size": (folder / "openvino_model.bin").stat().st_size}))
"""


def test_openvino_runner_does_not_keep_the_mapped_ir_resident(repro_workspace):
    """The CPU plugin packs its own copy of the weights it repacks; the .bin it read them from must not
    stay resident next to that copy (at Phi-3-mini shapes that was 7 GiB of the validate stage's peak).
    Pages the plugin reads in place at inference come back (on this 135M model most of them: 214 of
    269 MB; at Phi-3-mini width 8 MB of 1 GB); without the dropper both mappings stay whole."""
    ws, _, env = repro_workspace
    folder = ws / "artifacts/openvino/fp16"
    out = {}
    for mode in ("on", "off"):
        r = subprocess.run([sys.executable, "-c", _MAPPED_PROBE, str(folder), mode], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    size = out["on"]["size"]
    assert out["off"]["rss"] > 1.6 * size, out  # the control: both runtimes' mappings of the file stay resident
    assert out["on"]["rss"] < 0.6 * out["off"]["rss"], out  # measured 0.40 here


def test_outputs_are_hard_links_of_the_cache_not_copies(repro_workspace):
    """cache.type hardlink: every weights-sized output file is the cache's own inode (DVC copied none of
    them) and read-only; the uncached base IR is not in the cache. (DVC's run cache copies the small
    uncached metrics files, and a file whose content another output already cached keeps its inode.)"""
    ws, _, _ = repro_workspace
    objects = [f for f in (ws / ".dvc" / "cache").rglob("*") if f.is_file() and not f.name.endswith(".dir")]
    cached = {(st.st_dev, st.st_ino) for f in objects for st in [f.stat()]}
    big = [f for f in (ws / "artifacts").rglob("*") if f.is_file() and f.stat().st_size >= 1 << 20
           and "openvino-base" not in f.parts]
    linked = [f for f in big if (f.stat().st_dev, f.stat().st_ino) in cached]
    # not linked: only a file whose content another output put in the cache first (e.g. tokenizer.json)
    copied = [str(f.relative_to(ws)) for f in big if f not in linked and not any(
        g.stat().st_size == f.stat().st_size and filecmp.cmp(f, g, shallow=False) for g in linked)]
    assert not copied, f"copied into the cache instead of linked: {copied[:5]}"
    assert {"openvino_model.bin", "model.onnx.data", "model.safetensors"} <= {f.name for f in linked}
    assert all(not f.stat().st_mode & 0o222 for f in linked)
    base = [f for f in (ws / "artifacts" / "openvino-base").rglob("*") if f.is_file()]
    assert base and all((f.stat().st_dev, f.stat().st_ino) not in cached for f in base)


def test_no_telemetry_written_to_home(repro_workspace):
    ws, _, env = repro_workspace
    home = Path(env["HOME"])
    assert not (home / "intel").exists(), "OpenVINO telemetry wrote its consent/cid files"


def test_release_params_untouched_and_workspace_params_valid(repro_workspace):
    from aipc.pipeline.config import load_params

    ws, _, _ = repro_workspace
    root = Path(__file__).resolve().parent.parent
    assert "microsoft/Phi-3-mini-4k-instruct" in (root / "params.yaml").read_text()
    assert load_params(ws / "params.yaml").model.source == "embedded"
    # the workspace's own copy (a git repository of its own: DVC's git mode refuses a symlinked dvc.yaml)
    assert not (ws / "dvc.yaml").is_symlink() and (ws / "dvc.yaml").read_bytes() == (root / "dvc.yaml").read_bytes()


def linked_copy(ws: Path, dest: Path) -> Path:
    """A private copy of a repro workspace to change and re-run, without a second repro: read-only files
    (DVC's cache objects and the outputs linked to them; DVC replaces an output, never writes into it) are
    hard-linked, every writable file (params.yaml, DVC's state database, metrics) is copied, and the
    symlinks to the repo's dvc.yaml and code stay symlinks to the same files (relative ones re-pointed, as
    the copy may sit at another depth)."""
    import os
    import shutil

    def link_or_copy(src: str, dst: str) -> None:
        if os.stat(src).st_mode & 0o222:
            shutil.copy2(src, dst)
        else:
            os.link(src, dst)

    shutil.copytree(ws, dest, symlinks=True, copy_function=link_or_copy)
    for link in [p for p in dest.rglob("*") if p.is_symlink()]:
        target = os.readlink(link)
        if not os.path.isabs(target):
            link.unlink()
            link.symlink_to(os.path.realpath(ws / link.relative_to(dest)))
    return dest


@pytest.mark.converts
def test_second_repro_is_a_noop_then_an_experiment_reruns_only_int4(repro_workspace, tmp_path):
    """A second `dvc repro` does nothing; `dvc exp run -S` of one INT4 setting (in the workspace, a git
    repository of its own) reruns only that variant's chain, and DVC's git-based views show it against the
    committed baseline: `dvc exp show`, `dvc params diff`, `dvc metrics diff`, `dvc plots diff`."""
    from aipc.pipeline.workspace import commit

    ws, _, env = repro_workspace
    import time

    t0 = time.perf_counter()
    r = dvc(ws, env, "repro")  # changes nothing: the other tests still read the workspace as built
    assert r.returncode == 0
    assert ran_stages(r.stdout + r.stderr) == []
    assert "Data and pipelines are up to date" in r.stdout
    noop_s = time.perf_counter() - t0
    # 3.3-3.8 s measured on a quiet machine for 33 stages and their ~700 code deps (docs/benchmarks.md), 6 s
    # under the test run's load; a stage that reruns takes 10 s and more
    assert noop_s < 8, f"no-op repro took {noop_s:.1f}s"

    # the change in a private copy (the other tests read the shared workspace as built, in any order); its
    # copied files are hashed once more, so it is not timed
    ws = linked_copy(ws, tmp_path / "ws")
    assert commit(ws, "baseline: dvc repro") is not None  # dvc.lock and the metrics, as scripts/demo.sh does
    from scmrepo.git import Git

    with Git(str(ws)) as scm:
        tracked = {t.lstrip("/") for t in scm.get_fs(scm.get_rev()).find("/")}
    assert {"dvc.lock", "params.yaml", "metrics/accuracy/openvino-int4.json"} <= tracked
    # neither DVC's cached outputs nor the uncached intermediate IR (GBs for Phi-3) go into git
    assert not any(t.startswith("artifacts/") for t in tracked), sorted(tracked)[:20]
    before = json.loads((ws / "artifacts/openvino/int4/aipc_export.json").read_text())["effective"]
    base_ratio = yaml.safe_load((ws / "params.yaml").read_text())["openvino"]["variants"]["int4"]["ratio"]
    assert base_ratio != 0.9
    r = dvc(ws, env, "exp", "run", "-n", "ratio-0.9", "-S", "openvino.variants.int4.ratio=0.9")
    assert r.returncode == 0, r.stderr[-3000:]
    # only the int4 chain (export, its smoke run, its validation, its bundle) and the report over all
    assert sorted(ran_stages(r.stdout + r.stderr)) == ["bundle-openvino@int4", "export-openvino@int4", "report",
                                                       "smoke-openvino@int4", "validate-openvino@int4"]
    after = json.loads((ws / "artifacts/openvino/int4/aipc_export.json").read_text())["effective"]
    assert after["nncf"]["ratio"] == "0.9"
    assert after["weight_share_by_type"]["i4"] > before["weight_share_by_type"]["i4"]

    shown = dvc(ws, env, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    exps = [e for base in json.loads(shown.stdout) for group in base.get("experiments") or []
            for e in group["revs"] if e.get("name") == "ratio-0.9"]
    assert exps, shown.stdout[:2000]
    params = exps[0]["data"]["params"]["params.yaml"]["data"]
    assert params["openvino"]["variants"]["int4"]["ratio"] == 0.9
    diff = json.loads(dvc(ws, env, "params", "diff", "--json").stdout)["params.yaml"]
    ratio = diff["openvino.variants.int4.ratio"]
    assert (ratio["old"], ratio["new"]) == (base_ratio, 0.9), diff
    mdiff = dvc(ws, env, "metrics", "diff", "--json")
    assert mdiff.returncode == 0, mdiff.stderr[-2000:]
    changed = json.loads(mdiff.stdout)
    assert "metrics/accuracy/openvino-int4.json" in changed, sorted(changed)
    assert "metrics/accuracy/openvino-fp16.json" not in changed  # fp16 did not rerun
    pdiff = dvc(ws, env, "plots", "diff", "--json")
    assert pdiff.returncode == 0, pdiff.stderr[-2000:]
    plots = json.loads(pdiff.stdout)
    assert not plots.get("errors"), plots["errors"]
    assert {"metrics/plots/accuracy.json", "metrics/plots/gates.json", "metrics/plots/cost.json"} <= set(plots["data"])
    revs = plots["data"]["metrics/plots/gates.json"][0]["revisions"]
    assert "workspace" in revs and len(revs) == 2, revs  # the experiment against the committed baseline


def test_dvc_metrics_show_is_small_tables_without_warnings(repro_workspace):
    """`dvc metrics show` after a fresh repro: no warning (no metric is declared that only `aipc bench` writes),
    and lines a terminal can show: the accuracy table is one small file per artifact."""
    ws, r, env = repro_workspace
    assert r.returncode == 0
    shown = dvc(ws, env, "metrics", "show")
    assert shown.returncode == 0 and "WARNING" not in shown.stderr + shown.stdout, shown.stderr
    acc = dvc(ws, env, "metrics", "show", "metrics/accuracy")
    lines = acc.stdout.strip().splitlines()
    assert len(lines) == 1 + sum(len(v) for v in ARTIFACTS.values()), acc.stdout
    assert max(map(len, lines)) < 160, acc.stdout
    assert "worst_ppl_ratio" in lines[0] and "metrics/accuracy/openvino-int4.json" in acc.stdout
    # everything at once: accuracy and cost columns only (it was 53 columns with the full validate records)
    header = shown.stdout.strip().splitlines()[0].split()
    assert len(header) <= 20, header


def test_npu_ready_ir_is_symmetric_channelwise_and_blob_step_says_why_skipped(repro_workspace):
    ws, _, _ = repro_workspace
    rec = json.loads((ws / "artifacts/openvino/npu-int4/aipc_export.json").read_text())
    eff = rec["effective"]
    assert eff["nncf"]["mode"] == "int4_sym" and eff["nncf"]["ratio"] == "1.0"
    assert set(eff["int4_group_sizes"]) == {"channel"}
    assert rec["npu_blob"]["status"] == "skipped" and "no NPU device" in rec["npu_blob"]["note"]


def test_bench_writes_ratios_metrics_and_chart(repro_workspace):
    ws, _, env = repro_workspace
    r = subprocess.run([str(Path(sys.executable).parent / "aipc"), "bench", "--artifact", "openvino-int4",
                        "--artifact", "ortgenai-cpu-int4", "--prompt-lengths", "16,128", "--new-tokens", "8",
                        "--repeats", "1"], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((ws / "metrics" / "bench.json").read_text())
    assert rec["baseline"] == "transformers-fp32" and rec["machine"]["cpus"] >= 1
    assert set(rec["artifacts"]) == {"transformers-fp32", "openvino-int4", "ortgenai-cpu-int4"}
    for name, a in rec["artifacts"].items():
        assert [x["prompt_tokens"] for x in a["results"]] == [16, 128]
        for x in a["results"]:
            assert 0 < x["first_token_s"] < 60 and x["new_tokens"] >= 1
        assert a["peak_rss_mib"] > 100
        if name != "transformers-fp32":
            assert {"peak_rss", "first_token@16", "first_token@128"} <= set(a["ratios"])
    assert (ws / "metrics" / "plots" / "bench.png").stat().st_size > 10_000
    shown = dvc(ws, env, "metrics", "show", "--json", "metrics/bench.json")
    assert "first_token" in shown.stdout, shown.stdout + shown.stderr


def test_every_stage_recorded_its_cost_and_report_shows_it(repro_workspace):
    ws, r, env = repro_workspace
    stages = set(ran_stages(r.stdout + r.stderr))
    assert stages
    for stage in stages:
        cost = ws / "metrics" / ("report-cost.json" if stage == "report" else f"cost/{stage.replace('@', '-')}.json")
        m = json.loads(cost.read_text())
        assert m["wall_s"] > 0 and m["peak_rss_mib"] > 20, (stage, m)  # at least a Python process
        if stage.startswith(("export-", "reference", "smoke-", "validate-")):
            # these load the model (the embedded one is 135M parameters: >250 MiB even in int4)
            assert m["peak_rss_mib"] > 250, (stage, m)
    npu = json.loads((ws / "metrics" / "cost" / "export-npu-int8.json").read_text())
    assert npu["peak_rss_children_mib"] > 300, "the NPU-library worker's peak is counted"
    # the repro's warm workers (aipc.worker): every heavy stage was a fork, each toolchain imported once
    for stage in stages:
        if stage.startswith(("export-", "reference", "calibration", "smoke-", "validate-")):
            m = json.loads((ws / "metrics" / "cost" / f"{stage.replace('@', '-')}.json").read_text())
            assert m["process"] == "worker-fork", (stage, m)
    # one preload per repro and environment (the log accumulates over the repros run in this workspace)
    for log in ("aipc-worker.log", "aipc-worker-npu.log"):
        owners = re.findall(r"INFO preloaded .* serving for pid (\d+)", (ws / ".dvc" / "tmp" / log).read_text())
        assert owners and len(owners) == len(set(owners)), (log, owners)
    rep = subprocess.run([str(Path(sys.executable).parent / "aipc"), "report", "--no-plots"], cwd=ws, env=env,
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0 and "per-stage cost" in rep.stdout and "export-openvino-int4" in rep.stdout, rep.stdout


def _stage_deps(ws: Path) -> dict[str, tuple[str, list[str]]]:
    """{stage name: (its cost-metrics stem, its deps as written in dvc.yaml)}, resolved by DVC itself."""
    from dvc.repo import Repo

    out = {}
    with Repo(str(ws)) as repo:
        for stage in repo.index.stages:
            cost = re.search(r"--cost-metrics (\S+\.json)", stage.cmd)[1]  # metrics/report-cost.json for report
            out[stage.name] = (Path(cost).stem, [d.def_path for d in stage.deps])
    return out


def test_every_stage_lists_the_code_it_imported(repro_workspace):
    """Each stage process recorded the repository modules it had imported when it finished
    (pipeline.cost.record_imports); dvc.yaml lists every one of them (the file or a folder holding it),
    so an edit of any of them makes the stage stale."""
    ws, r, _ = repro_workspace
    assert r.returncode == 0
    missing = {}
    stages = _stage_deps(ws)
    assert len(stages) > 20
    for name, (stem, deps) in stages.items():
        rec = json.loads((ws / ".dvc" / "tmp" / "aipc-imports" / f"{stem}.json").read_text())
        assert rec["modules"] and all((ROOT / m).is_file() for m in rec["modules"]), name
        gaps = [m for m in rec["modules"] if not any(m == d or m.startswith(d.rstrip("/") + "/") for d in deps)]
        if gaps:
            missing[name] = gaps
    assert not missing, "dvc.yaml misses modules its stages import:\n" + "\n".join(
        f"  {k}: {', '.join(v)}" for k, v in sorted(missing.items()))


def _own_copy(ws: Path, name: str) -> Path:
    """Replace the linked copy's symlink ``name`` (into the repository) by a real copy of its target."""
    import shutil

    link = ws / name
    target = link.resolve()
    link.unlink()
    (shutil.copytree if target.is_dir() else shutil.copyfile)(target, link)
    return link


def _stale(ws: Path, env) -> set[str]:
    r = dvc(ws, env, "status", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return set(json.loads(r.stdout or "{}"))


@pytest.mark.converts  # `dvc status` in a copy: hashes its copied files
def test_a_changed_pin_or_module_makes_exactly_the_stages_that_use_it_stale(repro_workspace, tmp_path):
    ws, r, env = repro_workspace
    assert r.returncode == 0
    copy = linked_copy(ws, tmp_path / "ws")
    assert _stale(copy, env) == set()
    stages = _stage_deps(copy)
    # a pin of the main lock: every stage (each runs in the main environment)
    lock = _own_copy(copy, "requirements") / "lock.txt"
    text = lock.read_text()
    lock.write_text(re.sub(r"^nncf==\S+$", "nncf==0.0.1", text, flags=re.M))
    assert _stale(copy, env) == set(stages)
    lock.write_text(text)
    # a pin of the NPU environment: the stages that run in it
    pins = _own_copy(copy, "envs") / "npu" / "requirements.txt"
    npu_text = pins.read_text()
    pins.write_text(re.sub(r"^transformers==\S+$", "transformers==4.0.0", npu_text, flags=re.M))
    assert _stale(copy, env) == {"export-npu@int8", "smoke-npu@int8", "validate-npu@int8"}
    pins.write_text(npu_text)
    # a module: exactly the stages that imported it
    recorded = {name: json.loads((ws / ".dvc/tmp/aipc-imports" / f"{stem}.json").read_text())["modules"]
                for name, (stem, _) in stages.items()}
    module = "pipeline/export/ortgenai.py"
    users = {name for name, mods in recorded.items() if module in mods}
    assert users and users != set(stages)
    code = _own_copy(copy, "pipeline") / "export" / "ortgenai.py"
    code.write_text(code.read_text() + "\n# an edit\n")
    assert _stale(copy, env) == users
