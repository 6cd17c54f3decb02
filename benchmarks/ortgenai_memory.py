"""Peak RSS of the ORT GenAI builder on real Phi-3-mini layer shapes, extrapolated to 32 layers.

Builds random-weight Phi-3-mini-4k checkpoints (hidden 3072, 32 heads, vocab 32064, bf16 like the
Hub's) with 2 and 4 layers, runs `aipc export ortgenai VARIANT` on each in a fresh process, and fits
peak = a + b * layers (peak RSS is linear in layers). Prints a JSON table.

    .venv/bin/python benchmarks/ortgenai_memory.py --variant dml-int4 [--layers 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from measure import measure  # noqa: E402


def make_real_shape(dest: Path, layers: int, tokenizer_from: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import Phi3Config

    from tiny import TOKENIZER_FILES, real_config

    cfg = real_config("Phi-3-mini-4k-instruct")
    cfg.update(num_hidden_layers=layers, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg.pop("auto_map", None)
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    g = torch.Generator().manual_seed(0)
    t = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for n in range(layers):
        p = f"model.layers.{n}."
        t.update({p + "self_attn.qkv_proj.weight": (3 * h, h), p + "self_attn.o_proj.weight": (h, h),
                  p + "mlp.gate_up_proj.weight": (2 * i, h), p + "mlp.down_proj.weight": (h, i),
                  p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
    tensors = {k: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) if len(s) == 2 else torch.ones(s, dtype=torch.bfloat16)
               for k, s in t.items()}
    dest.mkdir(parents=True)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    cfg["torch_dtype"] = "bfloat16"
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in TOKENIZER_FILES:
        if (tokenizer_from / f).exists():
            shutil.copyfile(tokenizer_from / f, dest / f)
    Phi3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})  # sanity
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="dml-int4")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    from pipeline.sources.embedded import embedded_checkpoint

    tok = embedded_checkpoint()
    aipc = str(Path(sys.executable).parent / "aipc")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layers in args.layers:
            ws = Path(tmp) / f"ws{layers}"
            subprocess.run([aipc, "-q", "workspace", "init", str(ws)], check=True)
            make_real_shape(ws / "artifacts" / "source", layers, tok)
            (ws / "artifacts/source/source.json").write_text("{}")
            r = measure([aipc, "-q", "export", "ortgenai", args.variant], cwd=ws, stdout=subprocess.DEVNULL,
                        env={**os.environ, "TQDM_DISABLE": "1"})
            r["layers"] = layers
            rows.append(r)
            print(json.dumps(r), flush=True)
    (a_l, a), (b_l, b) = (rows[0]["layers"], rows[0]["peak_rss_gib"]), (rows[-1]["layers"], rows[-1]["peak_rss_gib"])
    per_layer = (b - a) / (b_l - a_l)
    print(json.dumps({"variant": args.variant, "per_layer_gib": round(per_layer, 3),
                      "base_gib": round(a - per_layer * a_l, 3),
                      "extrapolated_32_layers_gib": round(a + per_layer * (32 - a_l), 2)}))


if __name__ == "__main__":
    main()
