"""Tiny random-weight Phi-3 checkpoints built from the real Hub configs (tests/data/configs/).

Fewer layers and a smaller width, keeping every feature that changes the export: head_dim (so
LongRoPE factor lists stay valid), the GQA ratio, rope scaling, sliding window, partial rotary,
tying. The tokenizer is the embedded model's (vocab 49152), so ``vocab_size`` and the special token
ids follow it. config.json is written as the Hub ships it (raw JSON, e.g. ``rope_scaling.type``),
not re-saved through transformers.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

CONFIGS = Path(__file__).parent / "data" / "configs"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def real_config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def tiny_config(name: str, layers: int = 2, heads: int = 2, intermediate: int = 256) -> dict:
    cfg = real_config(name)
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    gqa = cfg["num_attention_heads"] // cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    heads = max(heads, gqa)
    cfg.update(
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // gqa,
        hidden_size=heads * head_dim,
        intermediate_size=intermediate,
        vocab_size=49152,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    cfg.pop("auto_map", None)
    cfg.pop("_name_or_path", None)
    return cfg


def make_tiny_phi3(dest: Path, tokenizer_from: Path, name: str = "Phi-3-mini-4k-instruct", seed: int = 0,
                   dtype: str = "float32", **shape) -> Path:
    """Write a random-weight Phi-3 checkpoint of the real config ``name`` (``dtype`` safetensors:
    float32, or bfloat16 as the Hub ships Phi-3)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = tiny_config(name, **shape)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # a deep copy: transformers 5 rewrites the rope_scaling dict it is given in place (adds rope_theta,
    # rope_type, ...), which transformers 4.x (the NPU environment) then refuses
    hf_cfg = Phi3Config(**copy.deepcopy({k: v for k, v in cfg.items()
                                         if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")}))
    model = Phi3ForCausalLM(hf_cfg).to(torch.float32).eval()
    with torch.no_grad():  # a larger spread than the default init, so logits are not flat
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.to(getattr(torch, dtype)).save_pretrained(dest, safe_serialization=True)
    cfg["torch_dtype"] = dtype
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in TOKENIZER_FILES:
        if (tokenizer_from / f).exists():
            shutil.copyfile(tokenizer_from / f, dest / f)
    return dest
