"""`aipc generate` / `aipc chat` on every bundle kind of the embedded model (issue 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aipc.pipeline.errors import ConfigError, EnvironmentProblem

AIPC = str(Path(sys.executable).parent / "aipc")
BUNDLES = ["openvino-int4", "openvino-fp16", "ortgenai-dml-int4", "ortgenai-cpu-int4", "npu-int8"]


def test_unknown_device_and_bad_target_are_clear(tmp_path):
    from aipc.validation.chat import check_device, resolve

    assert check_device("openvino", "gpu.1") == "GPU.1"
    with pytest.raises(ConfigError, match="'TPU' is not a device for openvino"):
        check_device("openvino", "tpu")
    with pytest.raises(ConfigError, match="DML"):
        check_device("ortgenai", "NPU")
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        resolve(str(tmp_path / "missing" / "x" / "y"))


def test_missing_runtime_is_one_message(monkeypatch):
    import importlib.util

    from aipc.validation import chat

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime_genai" else real(n, *a))
    with pytest.raises(EnvironmentProblem, match="onnxruntime_genai runtime is not installed"):
        chat.require_runtime("ortgenai")


def test_context_rule_names_both_numbers_and_the_fix():
    from aipc.pipeline.errors import ContextTooLong
    from aipc.validation.runners.base import check_context

    check_context(100, 90, 10)  # exactly the window: fine
    check_context(None, 10**6, 10)  # no recorded window: the runtime decides
    with pytest.raises(ContextTooLong, match=r"91 tokens and max_new_tokens is 10: 101 tokens, more than the "
                                             r"model's context window of 100") as e:
        check_context(100, 91, 10)
    assert "at most 9" in e.value.fix and e.value.exit_code == 2
    with pytest.raises(ContextTooLong) as e:
        check_context(100, 150, 1)
    assert "shorten the prompt to fewer than 100 tokens" in e.value.fix


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_over_long_prompt_is_one_message_in_every_backend(repro_workspace, bundle):
    """ORT GenAI died with a traceback past its context_length, OpenVINO answered garbage after minutes."""
    ws, r, env = repro_workspace
    folder = ws / "artifacts" / "bundles" / bundle
    context = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    out = subprocess.run([AIPC, "generate", f"artifacts/bundles/{bundle}", "--prompt", "hello " * context,
                          "--temperature", "0", "--max-new-tokens", "16"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"more than the model's context window of {context}" in out.stderr
    assert "shorten the prompt" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_generate_answers_streams_and_prints_stats(repro_workspace, bundle):
    ws, r, env = repro_workspace
    assert r.returncode == 0
    out = subprocess.run([AIPC, "generate", f"artifacts/bundles/{bundle}", "--prompt",
                          "What is the capital of France?", "--temperature", "0", "--max-new-tokens", "16"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip(), "empty answer"
    assert "[stats] first token" in out.stderr and "tokens/s" in out.stderr
    if bundle.startswith("npu"):
        assert "CPU fallback" in out.stderr  # no NPU on this machine: said so


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["openvino-int4", "ortgenai-cpu-int4"])
def test_tokens_arrive_in_pieces(repro_workspace, bundle):
    from aipc.validation.chat import open_bundle
    from aipc.validation.runners.base import Sampling

    ws, _, _ = repro_workspace
    pieces: list[str] = []
    with open_bundle(ws / "artifacts" / "bundles" / bundle, "CPU", None, {}) as runner:
        gen = runner.stream([{"role": "user", "content": "Write one sentence about the ocean."}],
                            Sampling(max_new_tokens=20, temperature=0.7, seed=3), pieces.append)
    assert len([p for p in pieces if p]) > 3 and "".join(pieces).strip()
    assert gen.first_token_s < gen.total_s


@pytest.mark.slow
def test_chat_scripted(repro_workspace):
    ws, _, env = repro_workspace
    # an over-long message is refused with one message and the chat goes on
    script = "hello " * 9000 + "\nWhat is the capital of France?\n/reset\nName a color.\n/exit\n"
    out = subprocess.run([AIPC, "chat", "artifacts/bundles/openvino-fp16", "--temperature", "0",
                          "--max-new-tokens", "12"], cwd=ws, env=env, input=script, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout
    assert out.stderr.count("[stats]") == 2
    assert out.stderr.count("[error]") == 1 and "context window of" in out.stderr and "Traceback" not in out.stderr
