"""The model card (README.md) of a bundle, generated from its manifest only (so it is deterministic).

The front matter is the Hub's model-card metadata, written with huggingface_hub's ModelCardData:
license (the source model's), base_model, base_model_relation (quantized builds only), pipeline_tag
and tags. The body says how to load the bundle with each runtime (every code block runs as printed,
after its install line, and prints the smoke stage's recorded answer; tests/test_bundle_consumer.py
runs them), the quantization settings, the validation table, the files, minimum runtime versions and
known limits.
"""

from __future__ import annotations

import json
from typing import Any

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


def _quantized(m: dict[str, Any]) -> bool:
    return _precision(m) in ("int4", "int8")


# library_name must be a key of the Hub's model-libraries list (huggingface.js packages/tasks/src/
# model-libraries.ts), which holds modeling libraries, not file formats or runtimes: none of OpenVINO,
# ONNX Runtime GenAI or the NPU library is one, so the cards name their runtime in tags only.
HUB_LIBRARIES: frozenset[str] = frozenset({"transformers"})


def front_matter(m: dict[str, Any]) -> str:
    """The card's YAML metadata, written by huggingface_hub's ModelCardData."""
    from huggingface_hub import ModelCardData

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
    extra: dict[str, Any] = {}
    if src.get("base_model") and _quantized(m):
        # the Hub infers the relation otherwise; an FP16 format conversion is none of adapter/merge/quantized/finetune
        extra["base_model_relation"] = "quantized"
    library = m.get("library_name")
    data = ModelCardData(
        license=src.get("license") or "unknown",
        base_model=src.get("base_model") or None,
        library_name=library if library in HUB_LIBRARIES else None,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(t for t in tags if t and t != "None")),
        **extra,
    )
    return data.to_yaml()


def _validated_precision(m: dict[str, Any], device: str) -> str | None:
    """The CPU inference precision the bundle's smoke run pinned, if any (recorded by the runner)."""
    if device != "CPU":
        return None
    rt = ((m.get("validation") or {}).get("smoke") or {}).get("runtime") or {}
    return rt.get("INFERENCE_PRECISION_HINT") if rt.get("device", "CPU") == "CPU" else None


DEFAULT_MESSAGES = [{"role": "user", "content": PROMPT}]
DEFAULT_MAX_NEW_TOKENS = 48
LOCAL_COPY = "# a local copy of this bundle instead: path = \"path/to/the/bundle\""
NPU_LOADER = "aipc_npu_loader.py"  # shipped in NPU-library bundles (envs/npu/aipc_npu/loader.py)


def example(m: dict[str, Any]) -> tuple[list[dict[str, str]], int, str | None]:
    """(chat, max_new_tokens, answer) of the smoke stage's first prompt: what the snippets run and should print."""
    smoke = (m.get("validation") or {}).get("smoke") or {}
    ex = smoke.get("example") or {}
    # role first, as people write a chat (the manifest stores keys sorted)
    messages = [{"role": m["role"], "content": m["content"]} for m in (ex.get("messages") or DEFAULT_MESSAGES)]
    return messages, int(smoke.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS), ex.get("text")


def install_line(m: dict[str, Any], *packages: str) -> str:
    """``pip install ...`` of ``packages``, each pinned as the manifest's minimum runtime says."""
    rt = m.get("min_runtime") or {}
    op = "==" if m.get("runtime_exact") else ">="

    def pin(pkg: str) -> str:
        if pkg not in rt:
            return pkg
        return f'"{pkg}{op}{str(rt[pkg]).split("+")[0]}"'  # a local label (+cpu) is no pip requirement

    return "pip install " + " ".join(pin(p) for p in packages)


def _download(repo: str) -> list[str]:
    return [f'path = hf.snapshot_download("{repo}")  {LOCAL_COPY}']


def _load_snippets(m: dict[str, Any]) -> list[str]:
    """How to load and run the bundle, per runtime: each code block runs as printed (on CPU, as validated)
    after its install line, and prints the smoke stage's greedy answer to its first prompt."""
    repo = m["repo_id"]
    params = m["quantization"]["params"]
    messages, max_new, answer = example(m)
    out: list[str] = []
    if m["backend"] == "openvino":
        target = "NPU" if params.get("target_device") == "npu" else None
        precision = _validated_precision(m, "CPU")
        kw = f', INFERENCE_PRECISION_HINT="{precision}"' if precision else ""
        ov_config = f', ov_config={{"INFERENCE_PRECISION_HINT": "{precision}"}}' if precision else ""
        device_note = ('  # built for the NPU: LLMPipeline(path, "NPU") on an Intel NPU' if target else
                       '  # or "GPU" / "NPU" on an Intel GPU / NPU')
        prompt = messages[-1]["content"] if len(messages) == 1 and messages[0].get("role") == "user" else PROMPT
        out += [
            f"**OpenVINO GenAI** (`{install_line(m, 'openvino-genai', 'huggingface_hub')}`):",
            "```python",
            "import huggingface_hub as hf, openvino_genai as ov_genai",
            *_download(repo),
            f'pipe = ov_genai.LLMPipeline(path, "CPU"{kw}){device_note}',
            f"print(pipe.generate({prompt!r}, max_new_tokens={max_new}, do_sample=False))  # applies the chat template",
            "```",
            "",
            f"**Optimum Intel** (`{install_line(m, 'optimum-intel', 'openvino')}`):",
            "```python",
            "import huggingface_hub as hf",
            "from optimum.intel import OVModelForCausalLM",
            "from transformers import AutoTokenizer",
            *_download(repo),
            f"model = OVModelForCausalLM.from_pretrained(path{ov_config})",
            "tok = AutoTokenizer.from_pretrained(path)",
            f"inputs = tok.apply_chat_template({messages!r}, add_generation_prompt=True, return_dict=True, "
            "return_tensors=\"pt\")",
            f"out = model.generate(**inputs, max_new_tokens={max_new}, do_sample=False)",
            'print(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
            "```",
        ]
        if precision:
            out += ["",
                    f"`INFERENCE_PRECISION_HINT=\"{precision}\"` is the CPU precision the validation below was "
                    "measured at. Without it OpenVINO runs bf16 on CPUs with AVX512-BF16 or AMX and f32 elsewhere, "
                    "so answers can differ from the measured ones; drop it on GPU and NPU, which run f16."]
    elif m["backend"] == "ortgenai":
        dml = params.get("execution_provider") == "dml"
        out += [
            f"**ONNX Runtime GenAI** (`{install_line(m, 'onnxruntime-genai', 'huggingface_hub')}`"
            + ("; on Windows with DirectML: `onnxruntime-genai-directml` instead, and without the "
               "`config.clear_providers()` line" if dml else "") + "):",
            "```python",
            "import huggingface_hub as hf, onnxruntime_genai as og",
            *_download(repo),
            "config = og.Config(path)",
            *(["config.clear_providers()  # the CPU provider, as validated (the bundle asks for DirectML)"] if dml else []),
            "model = og.Model(config)",
            "tokenizer = og.Tokenizer(model)",
            f"ids = tokenizer.encode(tokenizer.apply_chat_template({json.dumps(messages)!r}, add_generation_prompt=True))",
            "params = og.GeneratorParams(model)",
            f"params.set_search_options(do_sample=False, max_length=len(ids) + {max_new})",
            "generator = og.Generator(model, params)",
            "generator.append_tokens(ids)",
            "while not generator.is_done():",
            "    generator.generate_next_token()",
            "print(tokenizer.decode(generator.get_sequence(0)[len(ids):]))",
            "```",
        ]
    elif NPU_LOADER in m["files"]:
        env = m.get("runtime_env") or {}
        pins = [k for k in sorted(env) if k != "python"]
        py = ".".join(str(env.get("python", "")).split(".")[:2])
        out += [
            f"**Intel NPU Acceleration Library**, Python {py or '3'} "
            f"(`{install_line({'min_runtime': env, 'runtime_exact': True}, *pins, 'huggingface_hub')}`: "
            "the versions the pickle was written with, the only ones it loads with). PyPI has a Windows wheel of "
            "intel-npu-acceleration-library 1.4.0; on Linux pip builds it from the sdist (cmake and a C++ compiler "
            "needed; the sdist's build accepts only Ubuntu and downloads an OpenVINO toolkit). The bundle's own "
            f"`{NPU_LOADER}` checks every file's sha256 and these versions before it unpickles `model.pt`:",
            "```python",
            "import sys, huggingface_hub as hf",
            *_download(repo),
            "sys.path.insert(0, path)",
            "from aipc_npu_loader import load",
            "model = load(path)",
            f"print(model.generate({messages!r}, max_new_tokens={max_new})[\"text\"])",
            "```",
        ]
    else:
        pickles = m.get("pickle_files") or sorted(m["files"])[:1]
        target = pickles[0] if pickles else "<model file>"
        out += [
            "**Intel NPU Acceleration Library** "
            f"(`{install_line(m, 'intel-npu-acceleration-library', 'transformers', 'torch')}`). "
            "The model is a torch pickle: check every sha256 against `manifest.json` before loading it "
            "(`aipc verify` does):",
            "```python",
            "import hashlib, json, torch, huggingface_hub as hf, intel_npu_acceleration_library  # noqa: F401",
            f'd = hf.snapshot_download("{repo}"); files = json.load(open(f"{{d}}/manifest.json"))["files"]',
            'assert all(hashlib.sha256(open(f"{d}/{p}", "rb").read()).hexdigest() == f["sha256"] for p, f in files.items())',
            f'model = torch.load(f"{{d}}/{target}", weights_only=False)  # runs pickled code: only after the check',
            "```",
        ]
    if answer is not None:
        out += ["", "Output: the greedy answer the smoke stage recorded (on CPU):", "", "```text", answer, "```"]
    return out


def _verify_section(m: dict[str, Any]) -> list[str]:
    """How a consumer checks the signature with model-signing's own CLI (nothing of this project)."""
    sig = m.get("signature")
    if not sig:
        return []
    tools = sig.get("tools") or {}
    install = "pip install " + " ".join(f"{k}=={v}" for k, v in sorted(tools.items())) + " huggingface_hub"
    folder = m["repo_id"].split("/")[-1]
    who = "the release key" if sig.get("key") == "release" else "a development key (not a release)"
    return ["", "## Verify it", "",
            f"`{sig['file']}` is an [OpenSSF model-signing](https://github.com/sigstore/model-transparency) signature "
            f"over the sha256 of every other file of this repo, made with {who} whose public half is "
            f"`{sig['public_key']}` (fingerprint `{sig['fingerprint']}`). Check a download with model-signing's own "
            f"command line (`{install}`):", "",
            "```bash",
            f"hf download {m['repo_id']} --local-dir {folder}",
            f"model_signing verify key {folder} --signature {folder}/{sig['file']} --public_key {folder}/{sig['public_key']} "
            f"--ignore-paths {folder}/.cache",
            "```", "",
            "(`hf download --local-dir` keeps its own bookkeeping in `.cache/` inside the folder: not part of the "
            "bundle.)", "",
            "It prints `Verification succeeded`, and fails naming the file if any byte changed. It proves the files "
            "are what the key signed; compare the key (or its fingerprint) with the one the publisher announces, "
            "since anyone can re-sign a copy with a key of their own."]


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
        how = (f"load it only through `{NPU_LOADER}` (above), which checks it first" if NPU_LOADER in m["files"] else
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
    lines = ["---", front_matter(m).rstrip(), "---", "",
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
    lines += _verify_section(m)
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
