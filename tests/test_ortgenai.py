"""ONNX Runtime GenAI variants: params validation, options reaching the graph, files, provider,
tokenizer portability, and generation through onnxruntime_genai on CPU."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from aipc.pipeline.config import parse_params
from aipc.pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RELEASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def params_with(variants: dict):
    data = copy.deepcopy(RELEASE)
    data["ortgenai"]["variants"] = variants
    data["validation"]["gates"]["variants"] = {k: v for k, v in data["validation"]["gates"]["variants"].items()
                                               if not k.startswith("ortgenai-")}
    return parse_params(data)


@pytest.mark.parametrize("variant,needles", [
    ({"precision": "int4", "execution_provider": "dml", "block_size": 48, "accuracy_level": 4, "is_symmetric": True},
     ["ortgenai.variants.v.block_size", "48", "power of two"]),
    ({"precision": "int4", "execution_provider": "dml", "block_size": 8, "accuracy_level": 4, "is_symmetric": True},
     ["block_size", "power of two"]),
    ({"precision": "int4", "execution_provider": "dml", "block_size": 32, "accuracy_level": 7, "is_symmetric": True},
     ["ortgenai.variants.v.accuracy_level", "7"]),
    ({"precision": "int4", "execution_provider": "dml", "block_size": 32, "is_symmetric": True},
     ["accuracy_level", "explicitly"]),
    ({"precision": "fp16", "execution_provider": "dml", "block_size": 32}, ["block_size", "only apply to precision int4"]),
    ({"precision": "int3", "execution_provider": "dml"}, ["ortgenai.variants.v.precision", "'int3'"]),
    ({"precision": "int4", "execution_provider": "tpu", "block_size": 32, "accuracy_level": 4, "is_symmetric": True},
     ["execution_provider", "'tpu'"]),
    ({"precision": "int4", "execution_provider": "cpu", "block_size": 32, "accuracy_level": 4, "is_symmetric": True,
      "int4_block_size": 64}, ["unknown key", "int4_block_size"]),
])
def test_bad_builder_options_name_the_param(variant, needles):
    with pytest.raises(ConfigError) as exc:
        params_with({"v": variant})
    for n in needles:
        assert n in str(exc.value), str(exc.value)


def test_block_size_must_divide_hidden_size():
    p = params_with({"v": {"precision": "int4", "execution_provider": "cpu", "block_size": 128,
                           "accuracy_level": 4, "is_symmetric": True}})
    with pytest.raises(ConfigError, match=r"ortgenai.variants.v.block_size = 128 does not divide .*hidden_size 576"):
        p.ortgenai.variants["v"].check_model("v", {"hidden_size": 576, "intermediate_size": 1536})


def test_release_variants_map_to_builder_options():
    from aipc.pipeline.export.ortgenai import builder_options

    p = parse_params(RELEASE)
    v = p.ortgenai.variants
    assert set(v) >= {"dml-int4", "dml-fp16", "cpu-int4"}
    assert builder_options(v["dml-int4"]) == {"block_size": "32", "accuracy_level": "4", "is_symmetric": "true"}
    assert builder_options(v["dml-fp16"]) == {}


def _build(tmp_path, src, key, variant):
    from aipc.pipeline.export import ortgenai

    params = params_with({key: variant})
    out = tmp_path / key
    rec = ortgenai.export(params, key, src, out)
    return out, rec


@pytest.mark.slow
def test_model_names_the_builders_own_commit_not_this_checkouts(tmp_path, tiny_phi3):
    """The builder stamps ``git rev-parse HEAD`` of whatever checkout holds its site-packages into model.onnx;
    for a .venv inside this repository that was this repository's HEAD, so the model's bytes changed with
    every commit here. The export stamps the installed package's own commit, as a wheel install outside git."""
    import subprocess

    import onnx
    import onnxruntime_genai as og

    out, _ = _build(tmp_path, tiny_phi3, "dml-fp16", {"precision": "fp16", "execution_provider": "dml"})
    producer = onnx.load(str(out / "model.onnx"), load_external_data=False).producer_version
    assert producer == f"{og.__version__}+{og.__commit__[:7]}", producer
    ours = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert not ours or not producer.endswith(ours[:7])


@pytest.mark.slow
def test_options_reach_the_graph_and_files_are_complete(tmp_path, tiny_phi3):
    out, rec = _build(tmp_path, tiny_phi3, "cpu-int4",
                      {"precision": "int4", "execution_provider": "cpu", "block_size": 64, "accuracy_level": 1,
                       "is_symmetric": False})
    eff = rec["effective"]
    # every MatMulNBits carries exactly the requested attributes (the builder ignores int4_* spellings)
    assert list(eff["matmulnbits"]) == ["bits=4,block_size=64,accuracy_level=1,symmetric=false"]
    assert eff["providers"] == [] and eff["logits_dtype"] == "FLOAT"
    for f in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
              "aipc_export.json"):
        assert (out / f).is_file(), f
    assert rec["toolchain"]["onnxruntime-genai"] == "0.18.0" and rec["min_runtime"]["onnxruntime-genai-directml"] == "0.9.1"
    # default-valued keys older runtimes reject are dropped (docs/ortgenai-runtime-compat.md)
    sw = json.loads((out / "genai_config.json").read_text())["model"]["decoder"].get("sliding_window", {})
    assert "cache_slack" not in sw and "layers" not in sw
    assert rec["genai_config_dropped_defaults"] == ["model.decoder.sliding_window.cache_slack",
                                                    "model.decoder.sliding_window.layers"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dir left"

    out2, rec2 = _build(tmp_path, tiny_phi3, "dml-int4",
                        {"precision": "int4", "execution_provider": "dml", "block_size": 16, "accuracy_level": 4,
                         "is_symmetric": True})
    assert list(rec2["effective"]["matmulnbits"]) == ["bits=4,block_size=16,accuracy_level=4,symmetric=true"]
    genai = json.loads((out2 / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["session_options"]["provider_options"] == [{"dml": {"enable_graph_capture": "1"}}]


@pytest.mark.slow
def test_dml_fp16_keeps_dml_on_disk_and_runs_on_cpu_from_the_config_object(tmp_path, tiny_phi3):
    from aipc.validation.runners.ortgenai import OrtGenAIRunner

    out, rec = _build(tmp_path, tiny_phi3, "dml-fp16", {"precision": "fp16", "execution_provider": "dml"})
    assert rec["effective"]["providers"] == ["dml"] and rec["effective"]["matmulnbits"] == {}
    before = (out / "genai_config.json").read_bytes()
    with OrtGenAIRunner(out) as r:
        g = r.generate([{"role": "user", "content": "hi"}], 5)
    assert len(g.token_ids) >= 1 and any("CPU provider" in n for n in g.notes)
    assert (out / "genai_config.json").read_bytes() == before, "the provider on disk is untouched"


@pytest.mark.slow
def test_tokenizer_config_is_portable_to_older_runtimes(tmp_path, tiny_phi3):
    from aipc.pipeline.export.ortgenai import PORTABLE_TOKENIZER_CLASSES

    out, rec = _build(tmp_path, tiny_phi3, "cpu-int4",
                      {"precision": "int4", "execution_provider": "cpu", "block_size": 32, "accuracy_level": 4,
                       "is_symmetric": True})
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert rec["tokenizer"]["tokenizer_class_written_by_transformers"] == "TokenizersBackend"
    assert cfg["tokenizer_class"] in PORTABLE_TOKENIZER_CLASSES
    assert cfg["chat_template"] == (tiny_phi3 / "chat_template.jinja").read_text()
    assert cfg["add_bos_token"] is False and cfg["add_eos_token"] is False
    merges = json.loads((out / "tokenizer.json").read_text())["model"]["merges"]
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    # and the current runtime still encodes like the source tokenizer on ordinary text
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    cfgo = og.Config(str(out))
    cfgo.clear_providers()
    tok = og.Tokenizer(og.Model(cfgo))
    ref = AutoTokenizer.from_pretrained(tiny_phi3)
    for s in ["Hello world 12345", "naïve café — 東京 🙂", "<|im_start|>user\nhi<|im_end|>"]:
        assert list(tok.encode(s)) == ref.encode(s, add_special_tokens=False)


@pytest.mark.slow
def test_longrope_128k_config_builds(tmp_path, embedded_dir):
    """Phi-3-mini-128k (LongRoPE): the Hub's own config.json (rope_scaling.type) is what the
    builder sees, so its KeyError 'type' on transformers-5-resaved configs never triggers."""
    try:
        from .tiny import make_tiny_phi3
    except ImportError:
        from tiny import make_tiny_phi3
    src = make_tiny_phi3(tmp_path / "src128k", embedded_dir, name="Phi-3-mini-128k-instruct")
    assert json.loads((src / "config.json").read_text())["rope_scaling"]["type"] == "longrope"
    out, rec = _build(tmp_path, src, "cpu-int4",
                      {"precision": "int4", "execution_provider": "cpu", "block_size": 32, "accuracy_level": 4,
                       "is_symmetric": True})
    assert rec["effective"]["op_counts"]["GroupQueryAttention"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("key,variant", [
    ("cpu-int4", {"precision": "int4", "execution_provider": "cpu", "block_size": 32, "accuracy_level": 4,
                  "is_symmetric": False}),
    ("dml-int4", {"precision": "int4", "execution_provider": "dml", "block_size": 16, "accuracy_level": 4,
                  "is_symmetric": True, "matmul_mixed_precision": {"last_matmul": "int8"}}),
    ("dml-int4", {"precision": "int4", "execution_provider": "dml", "block_size": 32, "accuracy_level": 4,
                  "is_symmetric": True, "algo": "k_quant"}),
])
def test_int4_quantized_from_disk_is_byte_identical_to_the_builder_in_memory(tmp_path, tiny_phi3, key, variant):
    """The export hands the builder's float graph to the quantizer from a temp file (the memory fix);
    the model must be exactly what the builder writes when it keeps that graph in memory."""
    from aipc.pipeline.compat.ortgenai_builder import SPILL_DIR
    from aipc.pipeline.export.ortgenai import make_genai_config_portable, run_builder

    out, rec = _build(tmp_path, tiny_phi3, key, variant)
    # k_quant/rtn keep the builder's in-memory path (onnx refuses absolute external-data paths there)
    assert rec["unquantized_graph"] == ("memory" if "algo" in variant else "disk"), rec["unquantized_graph"]
    assert not (out / SPILL_DIR).exists(), "the temp graph is removed"

    ref = tmp_path / "upstream"  # the builder as is: the same call, outside unquantized_graph_on_disk
    run_builder(key, params_with({key: variant}).ortgenai.variants[key], tiny_phi3, ref, tmp_path / "cache")
    for f in ("model.onnx", "model.onnx.data"):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    make_genai_config_portable(ref)  # ours drops two default-valued keys older runtimes reject
    assert json.loads((out / "genai_config.json").read_text()) == json.loads((ref / "genai_config.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("key,variant", [
    ("dml-fp16", {"precision": "fp16", "execution_provider": "dml"}),
    ("cpu-fp32", {"precision": "fp32", "execution_provider": "cpu"}),
])
def test_layers_built_without_random_init_are_byte_identical(tmp_path, tiny_phi3, key, variant):
    """The export skips torch's random init of the Linear modules the builder creates to split qkv_proj /
    gate_up_proj (their weights are assigned right after); the model is what the builder as is writes.
    (The INT4 variants are compared the same way by the test above.)"""
    import torch

    from aipc.pipeline.compat.ortgenai_builder import layers_without_random_init
    from aipc.pipeline.export.ortgenai import make_genai_config_portable, run_builder

    calls = []
    real = torch.nn.init.kaiming_uniform_
    with layers_without_random_init() as active:
        # inside make_layer the init functions are no-ops: count the calls that reach torch
        torch.nn.init.kaiming_uniform_ = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            torch.nn.Linear(4, 4)
        finally:
            torch.nn.init.kaiming_uniform_ = real
    assert active and calls == [1], "outside make_layer the init runs as usual"

    out, _ = _build(tmp_path, tiny_phi3, key, variant)
    ref = tmp_path / "upstream"
    run_builder(key, params_with({key: variant}).ortgenai.variants[key], tiny_phi3, ref, tmp_path / "cache")
    for f in ("model.onnx", "model.onnx.data"):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    make_genai_config_portable(ref)
    assert json.loads((out / "genai_config.json").read_text()) == json.loads((ref / "genai_config.json").read_text())


def test_no_random_init_inside_the_builders_make_layer():
    """Within the wrap, the builder's make_layer sees torch's init functions as no-ops (the Linear it
    creates keeps torch.empty's memory instead of a kaiming_uniform_ fill), and the wrap is undone after."""
    import torch

    from aipc.pipeline.compat.ortgenai_builder import builder_model_class, layers_without_random_init

    model_class = builder_model_class()
    upstream = model_class.make_layer
    seen = []

    def probe(self, layer_id, layer):
        seen.append(torch.nn.init.kaiming_uniform_.__name__)

    model_class.make_layer = probe
    try:
        with layers_without_random_init():
            model_class.make_layer(object.__new__(model_class), 0, None)
        model_class.make_layer(object.__new__(model_class), 0, None)
    finally:
        model_class.make_layer = upstream
    assert seen == ["empty_func", "kaiming_uniform_"]
