"""Peak RSS of the ORT GenAI builder on real Phi-3-mini layer shapes, extrapolated to 32 layers.

Builds random-weight Phi-3-mini-4k checkpoints (hidden 3072, 32 heads, bf16 like the Hub's; the
embedded tokenizer's vocab 49152) with 2 and 4 layers and, on each, in fresh processes one after
the other, runs the baseline (the builder called as is: `create_model` with the same options) and
ours (`aipc export ortgenai VARIANT`, which hands the float graph to the INT4 quantizer from disk).
Fits peak = a + b * layers for each (peak RSS is linear in layers), extrapolates to the real 32
layers and prints the ratio ours / baseline. Prints JSON lines.

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

from measure import fit_line, measure  # noqa: E402


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
    import yaml

    from aipc.pipeline.config import parse_params
    from aipc.pipeline.export.ortgenai import builder_options
    from aipc.pipeline.sources.embedded import embedded_checkpoint

    tok = embedded_checkpoint()
    aipc = str(Path(sys.executable).parent / "aipc")
    rows: dict[str, list[dict]] = {"baseline": [], "ours": []}
    env = {**os.environ, "TQDM_DISABLE": "1", "AIPC_SKIP_MEMORY_CHECK": "1"}
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # not /tmp: it may be RAM-backed
        for layers in args.layers:
            ws = Path(tmp) / f"ws{layers}"
            subprocess.run([aipc, "-q", "workspace", "init", str(ws)], check=True)
            # built in a child: a vfork'ed child inherits this process's RSS high-water mark at exec,
            # so the measuring process must stay small (it never holds the random weights)
            src = ws / "artifacts" / "source"
            subprocess.run([sys.executable, __file__, "--make", str(src), str(layers), str(tok)], check=True,
                           stdout=subprocess.DEVNULL)
            (ws / "artifacts/source/source.json").write_text("{}")
            v = parse_params(yaml.safe_load((ws / "params.yaml").read_text())).ortgenai.variants[args.variant]
            extra = [f"{k}={x}" for k, x in builder_options(v).items()]
            upstream = (
                "import sys; from onnxruntime_genai.models.builder import create_model, parse_extra_options\n"
                "src, out, prec, ep, cache, *extra = sys.argv[1:]\n"
                "o = parse_extra_options(model_name=src, input_path=src, output_dir=out, precision=prec,"
                " execution_provider=ep, cache_dir=cache, extra_options=extra)\n"
                "create_model(src, src, out, prec, ep, cache, **o)\n")
            for name, cmd in (
                ("baseline", [sys.executable, "-c", upstream, str(src), str(ws / "upstream"), v.precision,
                              v.execution_provider, str(ws / "cache"), *extra]),
                ("ours", [aipc, "-q", "export", "ortgenai", args.variant]),
            ):
                r = measure(cmd, cwd=ws, stdout=subprocess.DEVNULL, env=env)
                if r["returncode"] != 0:
                    sys.exit(f"{name} failed at {layers} layers (exit {r['returncode']}): {cmd[:4]}")
                r.update(layers=layers, run=name)
                r["cmd"] = r["cmd"][:2] if name == "baseline" else r["cmd"]
                rows[name].append(r)
                print(json.dumps(r), flush=True)
            shutil.rmtree(ws / "upstream", ignore_errors=True)
            shutil.rmtree(ws / "artifacts" / "ortgenai", ignore_errors=True)
    fit = {}
    for name, rs in rows.items():
        base, per_layer = fit_line([(r["layers"], r["peak_rss_gib"]) for r in (rs[0], rs[-1])])  # first and last
        fit[name] = {"per_layer_gib": round(per_layer, 3), "base_gib": round(base, 3),
                     "extrapolated_32_layers_gib": round(base + per_layer * 32, 2)}
    print(json.dumps({"variant": args.variant, **fit,
                      "ratio_32_layers": round(fit["ours"]["extrapolated_32_layers_gib"]
                                               / fit["baseline"]["extrapolated_32_layers_gib"], 2)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make"]:
        make_real_shape(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
