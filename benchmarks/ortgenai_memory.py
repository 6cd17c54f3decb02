"""Peak RSS of the ORT GenAI export on real Phi-3-mini layer shapes: the builder as-is vs the stage.

Builds random-weight Phi-3-mini-4k checkpoints (hidden 3072, 32 heads, bf16 like the Hub's) with 2
and 4 layers, and for each (and for the embedded model) measures, each in a fresh process:

- ``as-is``: the ORT GenAI builder called as the stage called it before issue 4
  (``parse_extra_options`` + ``create_model``, whole-graph quantization);
- ``stage``: ``aipc export ortgenai VARIANT`` (node-by-node quantization, pipeline.export.ortgenai_stream).

Fits peak = a + b * layers per mode (peak RSS is linear in layers), extrapolates to 32 layers and
prints the stage/as-is ratios. Prints a JSON table.

    .venv/bin/python benchmarks/ortgenai_memory.py --variant dml-int4 [--layers 2 4] [--no-embedded]
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


AS_IS = """
import json, sys
from pathlib import Path
from pipeline.export.ortgenai import run_builder
src, out, precision, ep, extra = sys.argv[1:6]
run_builder(Path(src), Path(out), precision, ep, json.loads(extra), streamed=False)
"""


def run_pair(ws: Path, variant_key: str, aipc: str) -> dict[str, dict]:
    """Peak RSS of the builder as-is and of the stage on the workspace's source, one process each."""
    from pipeline.config import load_params

    variant = load_params(ws / "params.yaml").ortgenai.variants[variant_key]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    src = ws / "artifacts" / "source"
    with tempfile.TemporaryDirectory(dir=ws) as out:
        as_is = measure([sys.executable, "-c", AS_IS, str(src), out, variant.precision, variant.execution_provider,
                         json.dumps(variant.builder_extra_options())],
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    stage = measure([aipc, "-q", "export", "ortgenai", variant_key], cwd=ws, stdout=subprocess.DEVNULL, env=env)
    for r in (as_is, stage):
        if r["returncode"]:
            raise SystemExit(f"failed: {r}")
    return {"as-is": as_is, "stage": stage}


def workspace(tmp: Path, name: str, aipc: str) -> Path:
    ws = tmp / name
    subprocess.run([aipc, "-q", "workspace", "init", str(ws)], check=True)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="dml-int4")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--no-embedded", action="store_true")
    args = ap.parse_args()
    from pipeline.sources.embedded import embedded_checkpoint

    tok = embedded_checkpoint()
    aipc = str(Path(sys.executable).parent / "aipc")
    result: dict = {"variant": args.variant}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        if not args.no_embedded:
            ws = workspace(tmp, "embedded", aipc)
            shutil.copytree(tok, ws / "artifacts" / "source")
            (ws / "artifacts/source/source.json").write_text("{}")
            pair = run_pair(ws, args.variant, aipc)
            result["embedded"] = {m: r["peak_rss_gib"] for m, r in pair.items()}
            result["embedded"]["ratio"] = round(pair["stage"]["peak_rss_gib"] / pair["as-is"]["peak_rss_gib"], 3)
            print(json.dumps({"model": "embedded", **pair}), flush=True)
            shutil.rmtree(ws)
        rows = []
        for layers in args.layers:
            ws = workspace(tmp, f"ws{layers}", aipc)
            make_real_shape(ws / "artifacts" / "source", layers, tok)
            (ws / "artifacts/source/source.json").write_text("{}")
            pair = run_pair(ws, args.variant, aipc)
            rows.append((layers, pair))
            print(json.dumps({"layers": layers, **pair}), flush=True)
            shutil.rmtree(ws)
    if len(rows) >= 2:
        (l0, p0), (l1, p1) = rows[0], rows[-1]
        for mode in ("as-is", "stage"):
            a, b = p0[mode]["peak_rss_gib"], p1[mode]["peak_rss_gib"]
            per_layer = (b - a) / (l1 - l0)
            result[mode] = {"peak_gib": {l0: a, l1: b}, "per_layer_gib": round(per_layer, 3),
                            "base_gib": round(a - per_layer * l0, 3),
                            "extrapolated_32_layers_gib": round(a + per_layer * (32 - l0), 2)}
        result["ratio_stage_vs_as_is"] = {
            k: round(result["stage"][k] / result["as-is"][k], 3) for k in ("per_layer_gib", "extrapolated_32_layers_gib")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
