"""Data-aware INT4: the params refuse what NNCF refuses (before any model loads), the calibration
texts are disjoint from the evaluation texts, and a data-aware export records its algorithm."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from aipc.pipeline.config import CALIBRATION_TEXTS, EVAL_TEXTS, OpenVINOVariant, deep_merge, parse_params
from aipc.pipeline.errors import ConfigError
from aipc.pipeline.export.openvino import quantization_config
from aipc.pipeline.export.ortgenai import builder_options

ROOT = Path(__file__).resolve().parent.parent
RELEASE = yaml.safe_load((ROOT / "params.yaml").read_text())
EMBEDDED = deep_merge(RELEASE, yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text()))
CAL = {"texts": ["apache2", "python_topics"], "seq_len": 64, "num_samples": 8}
INT4 = {"weight_format": "int4", "group_size": 64, "ratio": 1.0, "sym": True}


def params_with(variant: dict, calibration: dict | None = CAL, base: dict = EMBEDDED):
    data = copy.deepcopy(base)
    data["openvino"]["variants"]["x"] = variant
    data["calibration"] = calibration
    if calibration is None:
        data.pop("calibration")
    return parse_params(data)


# ------------------------------------------------------------------ refused combinations (one test each)

@pytest.mark.parametrize("variant,needles", [
    # nncf quantize_model.py compress_weights (OpenVINO backend): SE / GPTQ / LoRA need a dataset
    ({**INT4, "scale_estimation": True}, ["scale_estimation", "dataset is None", "dataset: calibration"]),
    ({**INT4, "gptq": True}, ["gptq", "dataset is None"]),
    ({**INT4, "lora_correction": True}, ["lora_correction", "dataset is None"]),
    # nncf quantize_model.py: "Simultaneous use of Lora correction and GPTQ algorithms is not supported"
    ({**INT4, "gptq": True, "lora_correction": True, "dataset": "calibration"}, ["gptq together with lora_correction"]),
    # nncf algorithm.py check_user_compression_configuration: INT8 modes refuse the INT4 options
    ({"weight_format": "int8", "awq": True}, ["INT8", "awq"]),
    ({"weight_format": "int8", "scale_estimation": True, "dataset": "calibration"}, ["INT8", "scale_estimation", "dataset"]),
    ({"weight_format": "int8", "backup_precision": "int8_sym"}, ["INT8", "backup_precision"]),
    ({"weight_format": "int8", "all_layers": True}, ["INT8", "all_layers"]),
    ({"weight_format": "int8", "sensitivity_metric": "hessian_input_activation"}, ["INT8", "sensitivity_metric"]),
    # check_user_compression_configuration: a data-aware sensitivity metric needs a dataset
    ({**INT4, "ratio": 0.8, "sensitivity_metric": "hessian_input_activation"}, ["hessian_input_activation",
                                                                                 "requires a dataset"]),
    # not compression at all
    ({"weight_format": "fp16", "awq": True}, ["awq", "only apply to int4/int8"]),
    ({"weight_format": "fp16", "ignored_scope": {"names": ["a"]}}, ["ignored_scope"]),
    # ours: options that would silently do nothing
    ({**INT4, "dataset": "calibration"}, ["would change nothing"]),
    ({**INT4, "awq": True, "num_samples": 8}, ["num_samples only applies"]),
    ({**INT4, "backup_precision": "int16"}, ["backup_precision"]),
    ({**INT4, "sensitivity_metric": "vibes"}, ["sensitivity_metric"]),
    ({**INT4, "ignored_scope": {}}, ["ignored_scope", "at least one"]),
    ({**INT4, "ignored_scope": {"patterns": ["(unclosed"]}}, ["not a valid regular expression"]),
])
def test_refused_combinations_name_the_reason(variant, needles):
    with pytest.raises(ConfigError) as exc:
        params_with(variant)
    text = str(exc.value)
    assert "openvino.variants.x" in text
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"


def test_data_aware_variant_needs_a_calibration_section():
    with pytest.raises(ConfigError, match="no calibration: section"):
        params_with({**INT4, "awq": True, "dataset": "calibration"}, calibration=None)


def test_num_samples_cannot_exceed_the_calibration_windows():
    with pytest.raises(ConfigError, match="exceeds calibration.num_samples"):
        params_with({**INT4, "awq": True, "dataset": "calibration", "num_samples": 9})


def test_calibration_section_is_strict():
    with pytest.raises(ConfigError, match="calibration.texts"):
        params_with({**INT4}, calibration={**CAL, "texts": ["gpl3"]})  # an evaluation text is no calibration text
    with pytest.raises(ConfigError, match="calibration.seq_len"):
        params_with({**INT4}, calibration={**CAL, "seq_len": 4})


def test_accepted_combinations_map_to_optimum_options():
    p = params_with({**INT4, "awq": True, "scale_estimation": True, "dataset": "calibration", "num_samples": 8,
                     "backup_precision": "int8_sym", "ratio": 0.8, "sensitivity_metric": "hessian_input_activation",
                     "ignored_scope": {"patterns": [".*lm_head.*"]}})
    v = p.openvino.variants["x"]
    assert v.data_aware and v.algorithm == "awq+scale_estimation"
    q = quantization_config(v)
    assert (q["quant_method"], q["scale_estimation"], q["gptq"], q["lora_correction"]) == ("awq", True, None, None)
    assert (q["backup_precision"], q["sensitivity_metric"], q["num_samples"]) == ("int8_sym", "hessian_input_activation", 8)
    assert q["ignored_scope"] == {"names": [], "patterns": [".*lm_head.*"], "types": []}
    assert q["dataset"] is None  # the windows go in as a calibration_dataset object, not a Hub dataset name
    from optimum.intel.openvino.configuration import OVWeightQuantizationConfig

    cfg = OVWeightQuantizationConfig(**{k: v for k, v in q.items() if k != "dataset"})
    nncf_kwargs = cfg.to_nncf_dict()
    assert nncf_kwargs["awq"] is True and nncf_kwargs["scale_estimation"] is True
    # data-free AWQ is allowed (NNCF's data-free AWQ) and named as such
    assert params_with({**INT4, "awq": True}).openvino.variants["x"].algorithm == "awq(data-free)"


def test_data_free_dict_is_unchanged():
    """The seed's RTN recipe keeps producing exactly the optimum-cli dict it always did."""
    v = OpenVINOVariant(weight_format="int4", group_size=128, ratio=0.6, sym=True, group_size_fallback="error")
    assert quantization_config(v) == {
        "bits": 4, "ratio": 0.6, "sym": True, "group_size": 128, "all_layers": None, "dataset": None,
        "num_samples": None, "quant_method": "default", "sensitivity_metric": None, "scale_estimation": None,
        "gptq": None, "lora_correction": None, "dtype": "int4", "backup_precision": None, "statistics_path": None,
        "group_size_fallback": "error"}


def test_ortgenai_matmul_mixed_precision_and_algorithm():
    data = copy.deepcopy(EMBEDDED)
    data["ortgenai"]["variants"]["cpu-int4"].update(algo="k_quant", matmul_mixed_precision={"last_matmul": "int8"})
    v = parse_params(data).ortgenai.variants["cpu-int4"]
    assert builder_options(v)["matmul_mixed_precision"] == "last_matmul:int8"
    assert builder_options(v)["algo_config"] == "k_quant"
    assert v.algorithm == "k_quant+last_matmul:int8"
    data["ortgenai"]["variants"]["cpu-int4"]["matmul_mixed_precision"] = {"first_matmul": "int8"}
    with pytest.raises(ConfigError, match="matmul_mixed_precision"):
        parse_params(data)


# ------------------------------------------------------------------ calibration / evaluation disjointness

def _ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_calibration_and_evaluation_texts_share_no_8_word_sequence():
    from aipc.pipeline.calibration import calibration_text
    from aipc.validation.reference import eval_text

    assert set(CALIBRATION_TEXTS).isdisjoint(EVAL_TEXTS)
    held_out = set().union(*(_ngrams(eval_text(n)) for n in EVAL_TEXTS))
    for name in CALIBRATION_TEXTS:
        text = calibration_text(name)
        assert len(text) > 10_000, name
        shared = _ngrams(text) & held_out
        assert not shared, f"{name} shares {len(shared)} 8-grams with the evaluation texts, e.g. {next(iter(shared))}"


def test_the_check_can_fail():
    """The same check flags a calibration text that quotes an evaluation text."""
    from aipc.validation.reference import eval_text

    quoted = "Some calibration prose. " + " ".join(eval_text("gpl3").split()[100:120])
    assert _ngrams(quoted) & _ngrams(eval_text("gpl3"))


class _WordTokenizer:
    """Whitespace 'tokenizer' with a growing vocabulary (no model needed)."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]


def test_calibration_windows_are_round_robin_and_disjoint_from_eval_windows():
    from aipc.pipeline.config import CalibrationSection
    from aipc.pipeline.calibration import calibration_windows
    from aipc.validation.reference import eval_text

    tok = _WordTokenizer()
    cal = CalibrationSection(texts=["apache2", "python_topics"], seq_len=32, num_samples=40)
    wins = calibration_windows(tok, cal)
    assert wins.shape == (40, 32) and wins.dtype == np.int64
    eval_ids = [tok.encode(eval_text(n)) for n in EVAL_TEXTS]
    eval_16 = {tuple(ids[i:i + 16]) for ids in eval_ids for i in range(len(ids) - 15)}
    cal_16 = {tuple(w[i:i + 16]) for w in wins.tolist() for i in range(len(w) - 15)}
    assert not cal_16 & eval_16
    apache_first = tok.encode((ROOT / "validation/data/calibration/apache2.txt").read_text())[:32]
    assert wins[0].tolist() == apache_first  # round-robin: text 1, text 2, text 1, ...
    with pytest.raises(ConfigError, match="calibration.num_samples"):
        calibration_windows(tok, CalibrationSection(texts=["apache2"], seq_len=512, num_samples=1000))


# ------------------------------------------------------------------ one real data-aware export

# The release default (GPTQ + scale estimation, params.yaml; group 64 as on the embedded profile, since the
# tiny widths are 192/256) and AWQ + scale estimation. On the 135M embedded model GPTQ takes 120-180 s at
# any sample count; on this 2-layer model seconds, and the options reach NNCF the same way.
DATA_AWARE = {
    "release-default": ({**EMBEDDED["openvino"]["variants"]["int4"], "num_samples": 8},
                        ("False", "True", "True"), "scale_estimation+gptq"),
    "awq+se": ({**INT4, "awq": True, "scale_estimation": True, "dataset": "calibration", "num_samples": 8},
               ("True", "True", "False"), "awq+scale_estimation"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DATA_AWARE))
def test_data_aware_export_records_the_algorithm(case, tiny_phi3, tmp_path):
    from aipc.pipeline.export import openvino
    from aipc.pipeline.package.card import render
    from aipc.pipeline.package.manifest import build_manifest
    from aipc.pipeline.calibration import build_calibration, load_calibration

    from aipc.pipeline.sources import materialize

    variant, flags, algorithm = DATA_AWARE[case]
    assert variant["dataset"] == "calibration"
    p = params_with(variant, base={**EMBEDDED, "model": {"name": "tiny", "source": "local", "path": str(tiny_phi3)}})
    meta = build_calibration(p, tiny_phi3, tmp_path / "cal")
    assert meta["shape"] == [8, 64]
    _, wins = load_calibration(tmp_path / "cal")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_phi3)
    from aipc.validation.reference import eval_text

    eval_ids = [tok.encode(eval_text(n), add_special_tokens=False) for n in EVAL_TEXTS]
    eval_16 = {tuple(ids[i:i + 16]) for ids in eval_ids for i in range(len(ids) - 15)}
    assert not {tuple(w[i:i + 16]) for w in wins.tolist() for i in range(len(w) - 15)} & eval_16

    from aipc.pipeline.export import run_base

    run_base(p, tiny_phi3, tmp_path / "base")
    rec = openvino.export(p, "x", tiny_phi3, tmp_path / "ov", calibration_dir=tmp_path / "cal",
                          base_dir=tmp_path / "base")
    nncf = rec["effective"]["nncf"]
    assert (nncf["awq"], nncf["scale_estimation"], nncf["gptq"]) == flags
    assert nncf["mode"] == "int4_sym" and nncf["group_size"] == "64" and nncf["ratio"] == str(variant["ratio"])
    groups = rec["effective"]["int4_group_sizes"]
    assert set(groups) == {"64"} and groups["64"] > 0
    assert rec["algorithm"] == algorithm
    assert rec["calibration"]["samples_used"] == 8 and set(rec["calibration"]["texts"]) == {"apache2", "python_topics"}
    # what the bundle states: the manifest's quantization section and the card's line
    materialize(p.model, tmp_path / "source")  # the download stage's source.json, which the manifest cites
    manifest = build_manifest(p, "openvino", "x", tmp_path / "ov", tmp_path / "source", None, None)
    assert manifest["quantization"]["algorithm"] == algorithm
    assert manifest["quantization"]["calibration"]["samples_used"] == 8
    assert f"Algorithm: **{algorithm}**" in render({**manifest, "files": {}})  # files: added by the bundle step
