"""The model card (README.md) of a bundle, generated from its manifest only (so it is deterministic).

The front matter is the Hub's model-card metadata: license (the source model's), base_model,
base_model_relation: quantized, library_name, pipeline_tag and tags. The body says how to load the
bundle in three lines per runtime, the quantization settings, the validation table, the files,
minimum runtime versions and known limits.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

BACKEND_TITLE = {"openvino": "OpenVINO IR", "ortgenai": "ONNX Runtime GenAI", "npu": "Intel NPU Acceleration Library"}
PROMPT = "What is an AI PC?"


def human(n: int | float) -> str:
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _precision(m: dict[str, Any]) -> str:
    p = m["quantization"]["params"]
    return str(p.get("weight_format") or p.get("precision") or p.get("dtype") or "unknown")


def front_matter(m: dict[str, Any]) -> dict[str, Any]:
    src = m["source"]
    backend = m["backend"]
    params = m["quantization"]["params"]
    tags = ["phi3", "intel", "ai-pc", "aipc", _precision(m)]
    if backend == "openvino":
        tags += ["openvino", "nncf"] if params.get("weight_format") in ("int4", "int8") else ["openvino"]
        if params.get("target_device") == "npu":
            tags.append("npu")
    elif backend == "ortgenai":
        tags += ["onnx", "onnxruntime-genai"]
        tags.append({"dml": "directml"}.get(params.get("execution_provider"), str(params.get("execution_provider"))))
    elif backend == "npu":
        tags += ["npu", "intel-npu-acceleration-library"]
    meta: dict[str, Any] = {"license": src.get("license") or "unknown"}
    if src.get("base_model"):
        meta["base_model"] = src["base_model"]
        meta["base_model_relation"] = "quantized"
    meta.update(library_name=m["library_name"], pipeline_tag="text-generation",
                tags=list(dict.fromkeys(t for t in tags if t and t != "None")))
    return meta


def _validated_precision(m: dict[str, Any], device: str) -> str | None:
    """The CPU inference precision the bundle's smoke run pinned, if any (recorded by the runner)."""
    if device != "CPU":
        return None
    rt = ((m.get("validation") or {}).get("smoke") or {}).get("runtime") or {}
    return rt.get("INFERENCE_PRECISION_HINT") if rt.get("device", "CPU") == "CPU" else None


def _load_snippets(m: dict[str, Any]) -> list[str]:
    repo = m["repo_id"]
    params = m["quantization"]["params"]
    rt = m.get("min_runtime") or {}

    op = "==" if m.get("runtime_exact") else ">="

    def pin(pkg: str) -> str:
        return f'"{pkg}{op}{rt[pkg]}"' if pkg in rt else pkg

    out = []
    if m["backend"] == "openvino":
        device = "NPU" if params.get("target_device") == "npu" else "CPU"
        precision = _validated_precision(m, device)
        kw = f', INFERENCE_PRECISION_HINT="{precision}"' if precision else ""
        ov_config = f', ov_config={{"INFERENCE_PRECISION_HINT": "{precision}"}}' if precision else ""
        out += [
            f"**OpenVINO GenAI** (`pip install {pin('openvino-genai')} huggingface_hub`):",
            "```python",
            "import huggingface_hub as hf, openvino_genai as ov_genai",
            f'pipe = ov_genai.LLMPipeline(hf.snapshot_download("{repo}"), "{device}"{kw})  # or "GPU" / "NPU"',
            f'print(pipe.generate("{PROMPT}", max_new_tokens=64))',
            "```",
            "",
            f"**Optimum Intel** (`pip install {pin('optimum-intel')} {pin('openvino')}`):",
            "```python",
            "from optimum.intel import OVModelForCausalLM; from transformers import AutoTokenizer",
            f'model = OVModelForCausalLM.from_pretrained("{repo}"{ov_config})',
            f'tok = AutoTokenizer.from_pretrained("{repo}")',
            f'print(tok.decode(model.generate(**tok("{PROMPT}", return_tensors="pt"), max_new_tokens=64)[0]))',
            "```",
        ]
        if precision:
            out += ["",
                    f"`INFERENCE_PRECISION_HINT=\"{precision}\"` is the CPU precision the validation below was "
                    "measured at. Without it OpenVINO runs bf16 on CPUs with AVX512-BF16 or AMX and f32 elsewhere, "
                    "so answers can differ from the measured ones; drop it on GPU and NPU, which run f16."]
    elif m["backend"] == "ortgenai":
        pkg = "onnxruntime-genai-directml" if params.get("execution_provider") == "dml" else "onnxruntime-genai"
        out += [
            f"**ONNX Runtime GenAI** (`pip install {pin(pkg)} huggingface_hub`"
            + ("; DirectML runs on Windows" if pkg.endswith("directml") else "") + "):",
            "```python",
            "import huggingface_hub as hf, onnxruntime_genai as og",
            f'model = og.Model(hf.snapshot_download("{repo}"))',
            "tokenizer = og.Tokenizer(model)",
            "```",
            "Generate (greedy):",
            "```python",
            "params = og.GeneratorParams(model); params.set_search_options(max_length=256)",
            "generator = og.Generator(model, params)",
            f"generator.append_tokens(tokenizer.encode(tokenizer.apply_chat_template("
            f"'[{{\"role\": \"user\", \"content\": \"{PROMPT}\"}}]', add_generation_prompt=True)))",
            "while not generator.is_done(): generator.generate_next_token()",
            "print(tokenizer.decode(generator.get_sequence(0)))",
            "```",
        ]
    elif m.get("loader") == "pipeline.export.npu.load_npu_artifact":
        out += [
            "**Intel NPU Acceleration Library**, through the aipc repository's loader, which checks every file's "
            "sha256 and the environment's versions before anything is unpickled (run it in the NPU environment "
            f"that `envs/npu/setup.sh` builds: {', '.join(f'`{k}=={v}`' for k, v in sorted(rt.items()))}):",
            "```python",
            "import huggingface_hub as hf; from pipeline.export.npu import load_npu_artifact",
            f'with load_npu_artifact(hf.snapshot_download("{repo}")) as model:',
            f'    print(model.generate([{{"role": "user", "content": "{PROMPT}"}}], max_new_tokens=64)["text"])',
            "```",
        ]
    else:
        pickles = m.get("pickle_files") or sorted(m["files"])[:1]
        target = pickles[0] if pickles else "<model file>"
        out += [
            f"**Intel NPU Acceleration Library** (`pip install {pin('intel-npu-acceleration-library')} "
            f"{pin('transformers')} {pin('torch')}`). The model is a torch pickle: check every sha256 "
            "against `manifest.json` before loading it (`aipc verify` does):",
            "```python",
            "import hashlib, json, torch, huggingface_hub as hf, intel_npu_acceleration_library  # noqa: F401",
            f'd = hf.snapshot_download("{repo}"); files = json.load(open(f"{{d}}/manifest.json"))["files"]',
            'assert all(hashlib.sha256(open(f"{d}/{p}", "rb").read()).hexdigest() == f["sha256"] for p, f in files.items())',
            f'model = torch.load(f"{{d}}/{target}", weights_only=False)  # runs pickled code: only after the check',
            "```",
        ]
    return out


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, sort_keys=True).replace("|", "\\|") + "`"
    return f"`{v}`" if isinstance(v, (bool, type(None))) else str(v).replace("|", "\\|")


def _validation_rows(m: dict[str, Any]) -> list[str]:
    val = m.get("validation") or {}
    rows = ["| check | value | threshold | result |", "|---|---|---|---|"]
    smoke = val.get("smoke")
    if smoke:
        rows.append(f"| smoke generation (greedy, chat template) | {smoke['prompts_passed']}/{smoke['prompts_total']} "
                    f"prompts pass | all | {'pass' if smoke['passed'] else '**FAIL**'} |")
    else:
        rows.append("| smoke generation | not run | | **missing** |")
    validate = val.get("validate")
    if validate:
        for g in validate.get("gates", []):
            name = g.get("gate") or g.get("metric")
            rows.append(f"| {name} (`{g.get('metric')}`) | {_cell(g.get('value'))} | {g.get('op')} "
                        f"{_cell(g.get('threshold'))} | {'pass' if g.get('passed') else '**FAIL**'} |")
    else:
        rows.append("| accuracy gates (perplexity, top-1, KL, tokenizer parity) | not run for this bundle | | — |")
    return rows


def _limits(m: dict[str, Any]) -> list[str]:
    src = m["source"]
    params = m["quantization"]["params"]
    out = []
    if m.get("pickle_files"):
        how = (f"load it only through `{m['loader']}` (above), which checks it first" if m.get("loader") else
               "verify its sha256 against `manifest.json` first (the snippet above)")
        out.append(f"**{', '.join(m['pickle_files'])} is a Python (torch) pickle: loading it runs code.** Never "
                   f"`torch.load` it blindly: {how}; `aipc verify {m['repo_id']}` checks a download.")
    if m.get("device_fallback"):
        out.append(f"Compiled without an NPU present: the library ran on its {m['device_fallback']} fallback.")
    if m["backend"] == "npu":
        out.append("The pickle is tied to the transformers and intel-npu-acceleration-library versions listed "
                   "below (the library is archived upstream; OpenVINO GenAI is its maintained successor).")
    if _precision(m) in ("int4", "int8"):
        out.append(f"{_precision(m).upper()} weights: answers differ from the base model's; the validation table "
                   "shows the measured loss on the evaluation texts.")
    if m["backend"] == "openvino" and params.get("target_device") == "npu":
        out.append("Symmetric channel-wise INT4 for the OpenVINO NPU plugin; it also runs on CPU and GPU.")
    if m["backend"] == "ortgenai" and params.get("execution_provider") == "dml":
        out.append("Built for DirectML (Windows, `onnxruntime-genai-directml`); on Linux it was validated on the "
                   "CPU provider with the same graph.")
    for note in (m.get("validation", {}).get("smoke") or {}).get("notes", []):
        out.append(f"Validation note: {note}")
    if "validate" not in (m.get("validation") or {}):
        out.append("Only smoke-validated: no accuracy gates were recorded for this bundle.")
    if src.get("kind") == "embedded":
        out.append("Built from the embedded demo model (SmolLM2-135M-Instruct rewritten as Phi-3 from a Q4_1 "
                   "GGUF): a pipeline test model, not for production use.")
    if not src.get("license") or src.get("license") == "unknown":
        out.append("The source model's license could not be determined; set `bundle.license` before publishing.")
    out.append("The validation table comes from the pipeline's own runs (on CPU unless a note above says otherwise); "
               "other devices are not covered by it.")
    out.append("The chat template and tokenizer are the source model's; the context length is the source config's.")
    return out


def _calibration_line(cal: dict[str, Any] | None) -> str:
    if not cal:
        return "Calibration: none (data-free)."
    p = cal.get("params", {})
    texts = ", ".join(f"`{v.get('file', k)}` (sha256 `{str(v.get('sha256', ''))[:12]}…`)"
                      for k, v in (cal.get("texts") or {}).items())
    return (f"Calibration: {cal.get('samples_used')} windows x {p.get('seq_len')} tokens ({p.get('template')}) "
            f"from {texts}, tokenized with the model's tokenizer; disjoint from the evaluation texts.")


def render(m: dict[str, Any]) -> str:
    """README.md text for manifest ``m`` (its ``files`` table need not list README.md yet)."""
    src = m["source"]
    q = m["quantization"]
    title = f"{m['model']} — {BACKEND_TITLE.get(m['backend'], m['backend'])} {m['variant']}"
    base = src.get("base_model")
    base_txt = f"[{base}](https://huggingface.co/{base})" if base else "the source checkpoint"
    lines = ["---", yaml.safe_dump(front_matter(m), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {title}", "",
             f"{BACKEND_TITLE.get(m['backend'], m['backend'])} build ({_precision(m)}) of {base_txt} for Intel AI PCs, "
             f"made by the aipc pipeline from `{src['ref']}`.", "",
             "## Use it", ""]
    lines += _load_snippets(m)
    lines += ["", "## Quantization", "", f"Algorithm: **{q.get('algorithm') or 'not recorded'}**. "
              + _calibration_line(q.get("calibration")), "",
              "Requested settings (params.yaml):", "", "| setting | value |", "|---|---|"]
    for k, v in sorted(q["params"].items()):
        if v is not None:
            lines.append(f"| {k} | {v if isinstance(v, str) else _cell(json.dumps(v))} |")
    if q.get("builder_extra_options"):
        lines.append(f"| builder extra options | {_cell(q['builder_extra_options'])} |")
    lines += ["", "What the artifact really holds (read back from the exported graph):", "",
              "| property | value |", "|---|---|"]
    for k, v in sorted(q["effective"].items()):
        if isinstance(v, dict):  # NNCF's advanced defaults are long and unchanged: they stay in manifest.json only
            v = {a: b for a, b in v.items() if a != "advanced_parameters"}
        lines.append(f"| {k} | {_cell(v)} |")
    lines += ["", "## Validation", ""] + _validation_rows(m)
    lines += ["", "## Files", "",
              "Every file's sha256 and size are in `manifest.json` (this card's too). Check a download with "
              f"`aipc verify {m['repo_id']}`.", "", "| file | size | sha256 |", "|---|---|---|"]
    for name, meta in sorted(m["files"].items()):
        lines.append(f"| {name} | {human(meta['size'])} | `{meta['sha256'][:16]}…` |")
    lines += ["", "## Minimum runtime versions", "", f"Basis: {m.get('min_runtime_basis', '')}.", ""]
    op = "==" if m.get("runtime_exact") else ">="
    lines += [f"- {k} {op} {v}" for k, v in sorted((m.get("min_runtime") or {}).items())] or ["- (not recorded)"]
    lines += ["", "## Toolchain", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted((m.get("toolchain") or {}).items())]
    if m.get("runtime_env"):
        lines += ["", "Environment the artifact was written in (and must be read in):", "",
                  "| package | version |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(m["runtime_env"].items())]
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in _limits(m)]
    lic = src.get("license") or "unknown"
    carried = ", ".join(f"`{f}`" for f in src.get("license_files") or []) or "none found in the source"
    lines += ["", "## License", "",
              f"`{lic}`, the source model's license ({src.get('license_from')}). License files carried over: {carried}.",
              "", "## Source", "",
              f"- source: `{src['ref']}`",
              f"- weights sha256 (of the source safetensors' sha256s): `{src.get('weights_sha256')}`", ""]
    return "\n".join(lines)
