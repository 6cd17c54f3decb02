"""params.yaml schema: each bad value gives the documented error (key, value, fix)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aipc.pipeline.config import EmbeddedSource, HubSource, Params, deep_merge, load_params, parse_params
from aipc.pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RELEASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_(path: str, value):
    data = copy.deepcopy(RELEASE)
    keys = path.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    if value is _DELETE:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return data


_DELETE = object()


def test_release_params_are_valid_and_select_phi3_mini():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p.model, HubSource)
    assert p.model.repo_id == "microsoft/Phi-3-mini-4k-instruct"
    assert p.model.pinned, "the release revision must be a commit sha"
    v = p.openvino.variants["int4"]
    assert (v.weight_format, v.group_size, v.ratio, v.sym) == ("int4", 128, 0.6, True)
    assert v.gptq and v.scale_estimation and v.dataset == "calibration" and p.calibration is not None  # chosen by `aipc sweep`
    assert p.openvino.variants["fp16"].weight_format == "fp16"


def test_embedded_profile_is_valid():
    prof = yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text())
    p = parse_params(deep_merge(RELEASE, prof))
    assert isinstance(p.model, EmbeddedSource)
    assert p.openvino.variants["int4"].group_size == 64


@pytest.mark.parametrize(
    "path,value,needles",
    [
        ("openvino.variants.int4.grup_size", 64, ["unknown key", "openvino.variants.int4.grup_size"]),
        ("smoke.extra", 1, ["unknown key", "smoke.extra"]),
        ("openvino.variants.int4.ratio", 1.5, ["openvino.variants.int4.ratio", "1.5", "less than or equal to 1"]),
        ("openvino.variants.int4.ratio", 0, ["openvino.variants.int4.ratio", "greater than 0"]),
        ("openvino.variants.int4.ratio", "lots", ["openvino.variants.int4.ratio", "'lots'"]),
        ("openvino.variants.int4.group_size", 0, ["openvino.variants.int4.group_size", "-1 (per channel)"]),
        ("openvino.variants.int4.weight_format", "int3", ["weight_format", "'int3'"]),
        ("openvino.variants.int4.sym", _DELETE, ["sym", "explicitly"]),
        ("openvino.runtime.num_streams", 0, ["openvino.runtime.num_streams", "greater than or equal to 1"]),
        ("openvino.runtime.device", "TPU", ["openvino.runtime.device", "'TPU'"]),
        ("model.revision", _DELETE, ["model.revision", "required"]),
        ("model.repo_id", "not a repo id", ["model.repo_id", "'not a repo id'"]),
        ("model.source", "ftp", ["model", "'ftp'"]),
        ("smoke.max_new_tokens", 0, ["smoke.max_new_tokens"]),
        # strict types: a quoted number is text in YAML, refused rather than coerced
        ("openvino.variants.int4.ratio", "0.6", ["openvino.variants.int4.ratio", "'0.6'", "without quotes"]),
        ("openvino.variants.int4.group_size", "128", ["group_size", "'128'", "valid integer", "without quotes"]),
        ("openvino.variants.int4.sym", "true", ["openvino.variants.int4.sym", "'true'", "without quotes"]),
        ("smoke.max_new_tokens", 48.0, ["smoke.max_new_tokens", "48.0", "valid integer"]),
    ],
)
def test_bad_values_name_key_value_and_fix(path, value, needles):
    with pytest.raises(ConfigError) as exc:
        parse_params(with_(path, value))
    text = str(exc.value)
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"
    assert exc.value.fix


def test_fp16_variant_refuses_int4_options():
    with pytest.raises(ConfigError, match=r"group_size.*only apply to int4"):
        parse_params(with_("openvino.variants.fp16.group_size", 64))


def test_npu_variant_refuses_asymmetric_int4_and_says_why():
    data = with_("openvino.variants.npu-int4", {"weight_format": "int4", "group_size": -1, "ratio": 1.0,
                                                "sym": False, "target_device": "npu"})
    with pytest.raises(ConfigError) as exc:
        parse_params(data)
    assert "sym: false is refused for an NPU variant" in str(exc.value)
    assert "symmetric" in str(exc.value)


def test_npu_variant_needs_channelwise():
    data = with_("openvino.variants.npu-int4", {"weight_format": "int4", "group_size": 128, "ratio": 1.0,
                                                "sym": True, "target_device": "npu"})
    with pytest.raises(ConfigError, match="group_size: -1"):
        parse_params(data)


def test_group_size_must_divide_hidden_size_unless_fallback():
    emb = {"model": {"name": "e", "source": "embedded"}}
    base = deep_merge(RELEASE, {"model": None})
    data = deep_merge(base, emb)
    with pytest.raises(ConfigError) as exc:
        parse_params(data)  # group 128 vs hidden 576
    text = str(exc.value)
    assert "openvino.variants.int4.group_size = 128" in text and "hidden_size 576" in text
    assert "group_size_fallback: adjust" in text and "64" in text
    ok = deep_merge(data, {"openvino": {"variants": {"int4": {"group_size_fallback": "adjust"}}}})
    assert parse_params(ok).openvino.variants["int4"].group_size_fallback == "adjust"


def test_check_model_uses_real_widths():
    p = load_params(ROOT / "params.yaml")
    p.check_model({"hidden_size": 3072, "intermediate_size": 8192})  # Phi-3-mini: 128 divides both
    with pytest.raises(ConfigError, match="intermediate_size 8200"):
        p.check_model({"hidden_size": 3072, "intermediate_size": 8200})


def test_branch_revision_is_accepted_but_not_pinned():
    p = parse_params(with_("model.revision", "main"))
    assert not p.model.pinned


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_params_are_frozen():
    p = Params.model_validate(RELEASE)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        p.smoke.max_new_tokens = 3  # type: ignore[misc]


def test_openvino_cpu_precision_is_pinned_to_f32_unless_left_to_openvino():
    """Left to OpenVINO, the CPU plugin computes in bf16 on AVX512-BF16/AMX machines: the gates would
    depend on the build machine."""
    props = parse_params(copy.deepcopy(RELEASE)).openvino.runtime.properties()
    assert props["INFERENCE_PRECISION_HINT"] == "f32"
    assert props["PERFORMANCE_HINT"] == "LATENCY" and props["NUM_STREAMS"] == "1"
    assert "INFERENCE_PRECISION_HINT" not in parse_params(
        with_("openvino.runtime.inference_precision", "default")).openvino.runtime.properties()
    runtime = parse_params(copy.deepcopy(RELEASE)).openvino.runtime
    assert runtime.properties("GPU")["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_PRECISION_HINT" not in runtime.properties("NPU")  # the pin is for the CPU/GPU plugins
    assert "INFERENCE_PRECISION_HINT" not in parse_params(with_("openvino.runtime.device", "NPU")).openvino.runtime.properties()
    # the model cache only where it saves a compile (GPU / NPU); on the CPU a cache hit costs memory
    assert "CACHE_DIR" not in props and "CACHE_DIR" not in runtime.properties("CPU")
    assert runtime.properties("GPU.1")["CACHE_DIR"] == runtime.properties("NPU")["CACHE_DIR"] == ".cache/openvino"
    with pytest.raises(ConfigError) as err:
        parse_params(with_("openvino.runtime.inference_precision", "fp32"))
    assert "inference_precision" in str(err.value)


@pytest.mark.parametrize("entry, needles", [
    ("/home/me/docs.txt", ["validation.texts", "/home/me/docs.txt", "under texts/"]),
    ("../docs.txt", ["validation.texts", "../docs.txt", "under texts/"]),
    ("docs.txt", ["validation.texts", "'docs.txt'", "shipped text (python_docs, gpl3)"]),
    ("texts/docs.md", ["validation.texts", "texts/docs.md", ".txt file"]),
    ("python_doc", ["validation.texts", "'python_doc'", "python_docs"]),
])
def test_user_texts_are_txt_files_under_texts(entry, needles):
    with pytest.raises(ConfigError) as exc:
        parse_params(with_("validation.texts", ["gpl3", entry]))
    for n in needles:
        assert n in str(exc.value), (n, str(exc.value))


def test_user_texts_next_to_the_shipped_ones():
    from aipc.pipeline.config import text_label

    p = parse_params(with_("validation.texts", ["python_docs", "texts/our-docs.txt", "texts/eval/more.txt"]))
    assert [text_label(t) for t in p.validation.texts] == ["python_docs", "our-docs", "more"]
    p = parse_params(with_("calibration.texts", ["texts/our-prompts.txt"]))
    assert p.calibration.texts == ["texts/our-prompts.txt"]
    with pytest.raises(ConfigError) as exc:  # records name a file by its stem: two stems alike would collide
        parse_params(with_("validation.texts", ["texts/a/docs.txt", "texts/b/docs.txt"]))
    assert "same name" in str(exc.value) and "docs" in str(exc.value)
