"""The validation harness end to end: gates catch a broken artifact with one clear message;
tokenizer parity; gate configuration; evaluation texts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from aipc.validation import gates

AIPC = str(Path(sys.executable).parent / "aipc")
ROOT = Path(__file__).resolve().parent.parent


def test_gates_evaluate_and_describe():
    record = {"accuracy": {"worst_ppl_ratio": 1.8, "top1_agreement": 0.9, "kl_mean": 0.1, "kl_p99": 1.0},
              "tokenizer_parity": {"encode_agreement": 1.0, "roundtrip_exact": 1.0, "chat_template_equal": True},
              "smoke": {"passed": False, "prefix_agreement": 0.5}}
    th = {"max_ppl_ratio": 1.5, "min_top1_agreement": 0.6, "max_kl_mean": 0.5, "max_kl_p99": 3.0,
          "min_tokenizer_agreement": 1.0, "min_prefix_agreement": 0.0, "smoke_must_pass": True}
    res = gates.evaluate(record, th)
    failed = {g["gate"] for g in res if not g["passed"]}
    assert failed == {"max_ppl_ratio", "smoke_must_pass"}
    lines = gates.describe_failures(res)
    assert "accuracy.worst_ppl_ratio = 1.8 (gate max_ppl_ratio: must be <= 1.5)" in lines
    record["tokenizer_parity"]["chat_template_equal"] = False
    assert "chat_template_equal" in {g["gate"] for g in gates.evaluate(record, th) if not g["passed"]}


def test_missing_metric_fails_its_gate():
    res = gates.evaluate({}, {"max_kl_mean": 0.5})
    assert not any(g["passed"] for g in res)


def test_gate_overrides_inherit_defaults():
    import yaml

    from aipc.pipeline.config import parse_params

    root = Path(__file__).resolve().parent.parent
    p = parse_params(yaml.safe_load((root / "params.yaml").read_text()))
    g = p.validation.gates_for("openvino", "fp16")
    assert g["max_ppl_ratio"] == 1.02 and g["smoke_must_pass"] is True
    assert p.validation.gates_for("openvino", "int4")["max_ppl_ratio"] == 1.5
    # messages name the key the value came from: the variant's override, else the default
    assert p.validation.gate_key("openvino", "fp16", "max_ppl_ratio") == "validation.gates.variants.openvino-fp16.max_ppl_ratio"
    assert p.validation.gate_key("openvino", "fp16", "smoke_must_pass") == "validation.gates.default.smoke_must_pass"
    assert p.validation.gate_key("npu", "int4", "max_kl_mean").startswith("validation.gates.")


def test_a_failed_smoke_that_need_not_pass_names_the_key_it_came_from(tmp_path, caplog, monkeypatch):
    """The warning names validation.gates.default.smoke_must_pass when the default set it (not a variants key
    the user never wrote)."""
    import copy
    import logging

    import yaml

    from aipc.pipeline.config import parse_params
    from aipc.validation import smoke
    from aipc.validation.runners import Generation

    root = Path(__file__).resolve().parent.parent
    data = copy.deepcopy(yaml.safe_load((root / "params.yaml").read_text()))
    data["validation"]["gates"]["default"]["smoke_must_pass"] = False
    params = parse_params(data)

    class Runner:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def runtime_settings(self):
            return {}

        def generate(self, messages, max_new_tokens):
            return Generation(prompt="p", text="", token_ids=[], stopped_by="eos", first_token_s=0.01, total_s=0.01)

    import aipc.pipeline.preflight as preflight

    monkeypatch.setattr(smoke, "open_runner", lambda *a: Runner())

    monkeypatch.setattr(preflight, "require", lambda *a: None)
    monkeypatch.setattr(preflight, "estimate_artifact", lambda *a: 0)
    folder = tmp_path / "int4"
    folder.mkdir()
    with caplog.at_level(logging.WARNING):
        record = smoke.run_smoke(params, "openvino", folder, tmp_path / "smoke.json")
    assert record["passed"] is False
    assert "validation.gates.default.smoke_must_pass is false" in caplog.text, caplog.text
    assert "gates.variants" not in caplog.text


def test_gate_keys_must_name_artifacts():
    import copy

    import yaml

    from aipc.pipeline.config import parse_params
    from aipc.pipeline.errors import ConfigError

    root = Path(__file__).resolve().parent.parent
    data = yaml.safe_load((root / "params.yaml").read_text())
    bad = copy.deepcopy(data)
    bad["validation"]["gates"]["variants"]["openvino-int5"] = {"max_kl_mean": 1.0}
    with pytest.raises(ConfigError, match="openvino-int5.*name no artifact"):
        parse_params(bad)
    bad = copy.deepcopy(data)
    bad["validation"]["gates"]["default"]["min_top1_agreement"] = 1.5
    with pytest.raises(ConfigError, match=r"validation.gates.default.min_top1_agreement.*1.5"):
        parse_params(bad)
    bad = copy.deepcopy(data)
    del bad["validation"]["gates"]["default"]["max_kl_p99"]
    with pytest.raises(ConfigError, match="must set every gate; missing: max_kl_p99"):
        parse_params(bad)


def test_evaluation_texts_are_shipped_and_long_enough(embedded_dir):
    from transformers import AutoTokenizer

    from aipc.pipeline.texts import SHIPPED

    EVAL_DIR = SHIPPED["validation"]

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    for name in ("python_docs", "gpl3"):
        text = (EVAL_DIR / f"{name}.txt").read_text()
        assert len(tok.encode(text, add_special_tokens=False)) >= 4 * 1024
    assert "PSF" in (EVAL_DIR / "SOURCES.md").read_text()


def test_long_gates_apply_only_to_a_long_window():
    record = {"accuracy": {"worst_ppl_ratio": 1.0, "top1_agreement": 1.0, "kl_mean": 0.0, "kl_p99": 0.0},
              "tokenizer_parity": {"encode_agreement": 1.0, "roundtrip_exact": 1.0, "chat_template_equal": True},
              "smoke": {"passed": True, "prefix_agreement": 1.0}}
    th = {"min_top1_agreement": 0.9, "min_long_top1_agreement": 0.95, "max_long_kl_mean": 0.02}
    names = lambda res: {g["gate"] for g in res}  # noqa: E731
    assert not names(gates.evaluate(record, th)) & {"min_long_top1_agreement", "max_long_kl_mean"}  # no LongRoPE
    record["long_context"] = {"top1_agreement": 0.8, "kl_mean": 0.01, "tokens": 4200}
    res = gates.evaluate(record, th)
    assert {g["gate"] for g in res if not g["passed"]} == {"min_long_top1_agreement"}
    assert {"min_long_top1_agreement", "max_long_kl_mean"} <= names(res)
    assert not names(gates.evaluate(record, {"min_long_top1_agreement": None})) & {"min_long_top1_agreement"}


def test_long_window_only_for_longrope_and_past_the_original_context(tmp_path, embedded_dir):
    import copy

    import yaml
    from transformers import AutoTokenizer

    from aipc.pipeline.config import parse_params
    from aipc.pipeline.errors import ConfigError
    from aipc.validation.reference import long_window_ids

    root = Path(__file__).resolve().parent.parent
    data = yaml.safe_load((root / "params.yaml").read_text())
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    for name, expect in (("Phi-3-mini-128k-instruct", 4096), ("Phi-4-mini-instruct", 4096),
                         ("Phi-3-mini-4k-instruct", None), ("Phi-3-medium-4k-instruct", None)):
        d = tmp_path / name
        d.mkdir()
        shutil.copyfile(root / "tests/data/configs" / f"{name}.json", d / "config.json")
        got = long_window_ids(tok, parse_params(data), d)
        if expect is None:
            assert got is None, name
        else:
            ids, original = got
            assert original == expect and len(ids) == 4200 and ids.dtype == np.int32, name
    d = tmp_path / "Phi-3-mini-128k-instruct"
    short = copy.deepcopy(data)
    short["validation"]["long_window"] = 4096
    with pytest.raises(ConfigError, match="long_window = 4096 does not go past the model's original context"):
        long_window_ids(tok, parse_params(short), d)
    short["validation"]["long_window"] = None
    assert long_window_ids(tok, parse_params(short), d) is None
    short["validation"]["long_window"] = 100000
    with pytest.raises(ConfigError, match="the evaluation texts python_docs, gpl3 hold"):
        long_window_ids(tok, parse_params(short), d)


@pytest.mark.slow
def test_long_window_catches_a_longrope_export_with_the_short_factors(tmp_path, embedded_dir):
    """What the long window is for: a LongRoPE model run with its short rope factors past the original
    context (an export that drops the long factors, as transformers 4.57 does with a rewritten config)
    scores like noise on it, while 256-token windows cannot see the difference."""
    import copy

    import yaml

    try:
        from .tiny import make_tiny_phi3
    except ImportError:
        from tiny import make_tiny_phi3
    from aipc.pipeline.config import parse_params
    from aipc.validation.accuracy import reference_from_logits, score_window, summarize
    from aipc.validation.runners.transformers import TransformersRunner
    from aipc.validation.reference import long_window_ids

    model = make_tiny_phi3(tmp_path / "128k", embedded_dir, name="Phi-3-mini-128k-instruct")
    wrong = tmp_path / "short-factors"
    shutil.copytree(model, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["rope_scaling"]["long_factor"] = cfg["rope_scaling"]["short_factor"]
    (wrong / "config.json").write_text(json.dumps(cfg))
    params = parse_params(yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text()))
    with TransformersRunner(model) as ref_runner:
        ids, original = long_window_ids(ref_runner.tok, params, model)
        ref = reference_from_logits(ids, ref_runner.logits(ids.tolist()), 32)
        short = reference_from_logits(ids[:256], ref_runner.logits(ids[:256].tolist()), 32)
    with TransformersRunner(wrong) as runner:
        bad_long = summarize([score_window(ref, runner.logits(ids.tolist()))])
        bad_short = summarize([score_window(short, runner.logits(ids[:256].tolist()))])
    assert original == 4096 and len(ids) == 4200
    assert bad_short["top1_agreement"] == 1.0  # within the original context both factor sets agree
    assert bad_long["top1_agreement"] < 0.1, bad_long
    th = copy.deepcopy(params.validation.gates_for("openvino", "fp16"))
    failed = {g["gate"] for g in gates.evaluate({"long_context": bad_long}, th) if not g["passed"]}
    assert "min_long_top1_agreement" in failed


@pytest.mark.slow
def test_broken_artifact_is_caught_by_the_gates(repro_workspace):
    """Scramble a third of an FP16 IR's weights: validate fails with one message listing each
    failing metric, its value and its threshold; the metrics file is still written."""
    ws, r, env = repro_workspace
    assert r.returncode == 0
    good = ws / "artifacts" / "openvino" / "fp16"
    broken = ws / "artifacts" / "openvino" / "broken"
    shutil.copytree(good, broken)
    bin_path = broken / "openvino_model.bin"
    data = bytearray(bin_path.read_bytes())
    start, n = len(data) // 3, (len(data) // 3) // 2 * 2
    noise = np.random.default_rng(0).normal(0, 0.05, n // 2).astype(np.float16).tobytes()
    data[start:start + n] = noise
    bin_path.write_bytes(bytes(data))
    shutil.copyfile(ws / "metrics/smoke/openvino-fp16.json", ws / "metrics/smoke/openvino-broken.json")
    out = subprocess.run([AIPC, "validate", "openvino", "broken"], cwd=ws, env=env, capture_output=True,
                         text=True, timeout=900)
    try:
        assert out.returncode == 6, out.stderr[-2000:]
        assert "openvino/broken failed" in out.stderr and "gate(s)" in out.stderr
        assert "accuracy.worst_ppl_ratio = " in out.stderr and "(gate max_ppl_ratio: must be <= 1.5)" in out.stderr
        assert "accuracy.top1_agreement = " in out.stderr
        assert "Traceback" not in out.stderr
        rec = json.loads((ws / "metrics/validate/openvino-broken.json").read_text())
        assert rec["passed"] is False and rec["accuracy"]["worst_ppl_ratio"] > 1.5
    finally:
        shutil.rmtree(broken)
        for f in ("metrics/smoke/openvino-broken.json", "metrics/validate/openvino-broken.json"):
            (ws / f).unlink(missing_ok=True)


@pytest.mark.slow
def test_fp16_near_identical_int4_bounded(repro_workspace):
    ws, r, _ = repro_workspace
    assert r.returncode == 0
    fp16 = json.loads((ws / "metrics/validate/openvino-fp16.json").read_text())["accuracy"]
    int4 = json.loads((ws / "metrics/validate/openvino-int4.json").read_text())["accuracy"]
    assert fp16["worst_ppl_ratio"] < 1.01 and fp16["top1_agreement"] > 0.98 and fp16["kl_mean"] < 0.005
    assert 1.02 < int4["worst_ppl_ratio"] < 1.5 and int4["kl_mean"] > 10 * fp16["kl_mean"]
    dml16 = json.loads((ws / "metrics/validate/ortgenai-dml-fp16.json").read_text())["accuracy"]
    assert dml16["worst_ppl_ratio"] < 1.01 and dml16["top1_agreement"] > 0.98
    table = subprocess.run([AIPC, "report"], cwd=ws, capture_output=True, text=True)
    assert table.returncode == 0 and "openvino-int4" in table.stdout
    assert (ws / "metrics/plots/accuracy.png").stat().st_size > 10_000


def test_report_stage_writes_small_metrics_and_gate_plots(tmp_path):
    """`aipc report --dvc` (the report stage): one small metrics file per artifact (what `dvc metrics show
    metrics/accuracy` prints, a handful of columns, not the 40 of a full validate record), and plot data of
    each numeric gate as the share of its allowed distance from ideal that the artifact uses."""
    from aipc.validation.report import SUMMARY, write_dvc_outputs

    m = tmp_path / "metrics"
    (m / "validate").mkdir(parents=True)
    (m / "cost").mkdir()
    rec = {"backend": "openvino", "variant": "int4", "artifact": "artifacts/openvino/int4", "protocol": {}, "texts": {},
           "passed": False,
           "accuracy": {"worst_ppl_ratio": 1.2, "top1_agreement": 0.8, "kl_mean": 0.25, "kl_p99": 1.0,
                        "texts": {"a": {"perplexity": 12.0, "reference_perplexity": 10.0}}},
           "tokenizer_parity": {"encode_agreement": 1.0},
           "smoke": {"passed": True, "prefix_agreement": 0.5, "file": "metrics/smoke/openvino-int4.json"},
           "gates": [{"gate": "max_ppl_ratio", "metric": "accuracy.worst_ppl_ratio", "op": "<=", "threshold": 1.5,
                      "value": 1.2, "passed": True},
                     {"gate": "min_top1_agreement", "metric": "accuracy.top1_agreement", "op": ">=",
                      "threshold": 0.9, "value": 0.8, "passed": False},
                     {"gate": "max_kl_mean", "metric": "accuracy.kl_mean", "op": "<=", "threshold": 0.5,
                      "value": 0.25, "passed": True},
                     {"gate": "tokenizer_roundtrip_exact", "metric": "tokenizer_parity.roundtrip_exact", "op": ">=",
                      "threshold": 1.0, "value": 1.0, "passed": True},
                     {"gate": "smoke_must_pass", "metric": "smoke.passed", "op": "==", "threshold": True,
                      "value": True, "passed": True}]}
    (m / "validate" / "openvino-int4.json").write_text(json.dumps(rec))
    (m / "cost" / "export-openvino-int4.json").write_text(json.dumps(
        {"stage": "export-openvino@int4", "wall_s": 12.5, "cpu_s": 20.0, "peak_rss_mib": 900.0,
         "peak_rss_self_mib": 900.0, "peak_rss_children_mib": 0.0, "machine": {"cpus": 2, "mem_total_gib": 23.4},
         "process": "worker-fork"}))
    write_dvc_outputs(m)
    small = json.loads((m / "accuracy" / "openvino-int4.json").read_text())
    assert set(small) <= set(SUMMARY) and len(small) <= 8
    assert small["passed"] is False and small["worst_ppl_ratio"] == 1.2 and small["prefix"] == 0.5
    gates = {g["gate"]: g for g in json.loads((m / "plots" / "gates.json").read_text())}
    assert gates["max_ppl_ratio"]["share_of_limit"] == pytest.approx(0.4)  # 0.2 of the 0.5 allowed above 1
    assert gates["min_top1_agreement"]["share_of_limit"] == pytest.approx(2.0)  # 0.2 lost, 0.1 allowed: fails
    assert gates["max_kl_mean"]["share_of_limit"] == pytest.approx(0.5)  # 0.25 of 0.5 above 0
    assert gates["tokenizer_roundtrip_exact"]["share_of_limit"] == 0.0  # at its ideal: uses nothing
    assert "smoke_must_pass" not in gates  # yes/no: in the table, not a bar
    assert gates["max_ppl_ratio"]["artifact_gate"] == "openvino-int4 max_ppl_ratio"
    cost = json.loads((m / "plots" / "cost.json").read_text())
    assert cost == [{"stage": "export-openvino@int4", "wall_s": 12.5, "cpu_s": 20.0, "peak_rss_mib": 900.0}]
    acc = json.loads((m / "plots" / "accuracy.json").read_text())
    assert acc[0]["artifact"] == "openvino-int4" and acc[0]["worst_ppl_ratio"] == 1.2


def test_a_users_own_texts_feed_evaluation_and_calibration(embedded_dir, tmp_path, monkeypatch):
    """validation.texts / calibration.texts may name the user's files under texts/: their windows are cut
    like the shipped ones, the records name the file and its sha256, and a text too short for the protocol,
    a missing one or one that is not UTF-8 is one clear error naming the key, the file and the fix."""
    from transformers import AutoTokenizer

    from aipc.pipeline.config import CalibrationSection, parse_params
    from aipc.pipeline.errors import ConfigError
    from aipc.pipeline.fsutil import sha256_file
    from aipc.pipeline.calibration import calibration_windows
    from aipc.validation.reference import eval_windows
    from aipc.pipeline.texts import text_record

    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts").mkdir()
    own = tmp_path / "texts" / "own.txt"
    shipped = (Path(__file__).resolve().parent.parent / "validation/data/eval/gpl3.txt").read_text()
    own.write_text(shipped[20000:40000])
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["validation"]["texts"] = ["python_docs", "texts/own.txt"]
    params = parse_params(data)
    wins = eval_windows(tok, params)
    assert set(wins) == {"python_docs", "own"} and wins["own"].shape == wins["python_docs"].shape
    assert wins["own"][0, :8].tolist() == tok.encode(own.read_text(), add_special_tokens=False)[:8]
    assert text_record("validation", "texts/own.txt") == {"file": "texts/own.txt", "sha256": sha256_file(own)}
    assert text_record("validation", "gpl3")["file"] == "validation/data/eval/gpl3.txt"
    cal = CalibrationSection(texts=["texts/own.txt"], seq_len=64, num_samples=8)
    assert calibration_windows(tok, cal).shape == (8, 64)

    (tmp_path / "texts" / "short.txt").write_text("Too short to hold two windows.")
    data["validation"]["texts"] = ["texts/short.txt"]
    with pytest.raises(ConfigError) as e:
        eval_windows(tok, parse_params(data))
    assert "validation.texts: texts/short.txt" in str(e.value) and "too short" in str(e.value)
    assert "256 x 2 = 512 tokens" in str(e.value) and "longer text" in e.value.fix
    data["validation"]["texts"] = ["texts/missing.txt"]
    with pytest.raises(ConfigError) as e:
        eval_windows(tok, parse_params(data))
    assert "texts/missing.txt: no such file" in str(e.value) and "python_docs" in e.value.fix
    (tmp_path / "texts" / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 500)
    data["validation"]["texts"] = ["texts/latin1.txt"]
    with pytest.raises(ConfigError) as e:
        eval_windows(tok, parse_params(data))
    assert "not UTF-8" in str(e.value)
