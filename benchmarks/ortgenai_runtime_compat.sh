#!/usr/bin/env bash
# Which onnxruntime-genai runtimes load and run the ORT GenAI models this project builds?
# A script, not a test (it installs old runtimes from PyPI into throwaway venvs). Results and the
# reasoning behind pipeline/export/ortgenai.py's MIN_RUNTIME: docs/ortgenai-runtime-compat.md
#
#   bash benchmarks/ortgenai_runtime_compat.sh [VERSION ...]     (default: the boundaries 0.16.0 0.15.2 0.9.1 0.9.0)
#
#   1. builds a tiny random-weight Phi-3 (tests/tiny.py, the embedded model's tokenizer) and exports
#      the release variants cpu-int4, dml-fp16, dml-int4 with the project's exporter (params.yaml),
#      into $COMPAT_DIR (default /tmp/compat; kept and reused when present);
#   2. takes reference outputs from the repo's .venv runtime (builder version): 10 greedy tokens for a
#      chat prompt, tokenizer ids of a few strings, apply_chat_template's text;
#   3. for each VERSION: a venv $OG_VENVS/VERSION (default /tmp/ogvenvs; python3.11 -m venv) with
#      `pip install onnxruntime-genai==VERSION` (and whatever onnxruntime pip resolves for it, unless
#      ORT_SPEC pins one, e.g. ORT_SPEC='onnxruntime==1.20.1'), runs the same probe on the CPU provider
#      and compares with the reference. Prints one markdown row per VERSION; JSON in $COMPAT_DIR/results.
#
# DirectML variants are loaded on CPU: Config.clear_providers() where the runtime has it, else a COPY
# of the folder whose genai_config.json has provider_options [] (the exported folder is never edited).
# Runtimes whose config parser rejects a key are retried on a COPY with that key dropped
# (COMPAT_DROP_UNKNOWN=0 disables); the row then says which keys were dropped, and its "loads" is "no".
# COMPAT_REWRITE="-model.decoder.sliding_window model.pad_token_id=0" edits a COPY of genai_config.json
# before loading (what-if checks for older runtimes; "-path" drops a key, "path=JSON" sets it).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPAT_DIR="${COMPAT_DIR:-/tmp/compat}"
OG_VENVS="${OG_VENVS:-/tmp/ogvenvs}"
PYTHON="${PYTHON:-python3.11}"
ORT_SPEC="${ORT_SPEC:-}"
VARIANTS=(cpu-int4 dml-fp16 dml-int4)
if [ "$#" -gt 0 ]; then versions=("$@"); else versions=(0.16.0 0.15.2 0.9.1 0.9.0); fi
mkdir -p "$COMPAT_DIR/results" "$OG_VENVS"
export OMP_NUM_THREADS=1 ORT_DISABLE_TELEMETRY=1

# --- 1. models ---------------------------------------------------------------------------------
if [ ! -f "$COMPAT_DIR/src/config.json" ]; then
  (cd "$repo" && .venv/bin/python -c "import sys; sys.path.insert(0,'tests'); from tiny import make_tiny_phi3; from aipc.pipeline.sources.embedded import embedded_checkpoint; from pathlib import Path; make_tiny_phi3(Path('$COMPAT_DIR/src'), embedded_checkpoint())")
fi
for k in "${VARIANTS[@]}"; do
  if [ ! -f "$COMPAT_DIR/$k/genai_config.json" ]; then
    (cd "$repo" && .venv/bin/python -c "from aipc.pipeline.config import load_params; from aipc.pipeline.export.ortgenai import export; from pathlib import Path; p=load_params('params.yaml'); export(p, '$k', Path('$COMPAT_DIR/src'), Path('$COMPAT_DIR/$k'))") >"$COMPAT_DIR/export-$k.log" 2>&1
  fi
done

# --- the probe (runs inside each venv; only the stdlib and onnxruntime_genai) --------------------
probe="$COMPAT_DIR/probe.py"
cat >"$probe" <<'PY'
import atexit, json, os, shutil, sys, tempfile, traceback
import numpy as np
import onnxruntime_genai as og

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
STRINGS = ["Hello, world!", "  leading spaces and\ttabs\n", "naïve café 東京 🙂",
           "<|im_start|>user\nhi<|im_end|>\n", "def f(x):\n    return x ** 2"]
N_NEW = 10


def err(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if len(msg) > 300:  # keep the head (what failed) and the tail (why)
        msg = msg[:120] + " ... " + msg[-170:]
    return f"{type(e).__name__}: {msg}"


def copy_folder(src, edit):
    """A folder of symlinks to src's files with an edited genai_config.json (removed at exit)."""
    dst = tempfile.mkdtemp(prefix="ogcompat-")
    atexit.register(shutil.rmtree, dst, True)
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if f == "genai_config.json":
            continue
        os.symlink(p, os.path.join(dst, f))
    cfg = json.load(open(os.path.join(src, "genai_config.json")))
    edit(cfg)
    json.dump(cfg, open(os.path.join(dst, "genai_config.json"), "w"), indent=4)
    return dst


def no_providers(cfg):
    cfg["model"]["decoder"].setdefault("session_options", {})["provider_options"] = []


def drop_path(cfg, path):
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node.pop(path[-1], None)


def find_key(cfg, name, prefix=()):
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k == name:
                return prefix + (k,)
            r = find_key(v, name, prefix + (k,))
            if r:
                return r
    return None


def rewrites():
    """COMPAT_REWRITE: space-separated edits of genai_config.json applied to a COPY before loading:
    "-a.b.c" drops key a.b.c, "a.b=JSON" sets it (e.g. "-model.decoder.sliding_window model.pad_token_id=0")."""
    out = []
    for item in os.environ.get("COMPAT_REWRITE", "").split():
        if item.startswith("-"):
            out.append((tuple(item[1:].split(".")), None, True))
        else:
            k, v = item.split("=", 1)
            out.append((tuple(k.split(".")), json.loads(v), False))
    return out


def apply_rewrite(cfg, path, value, drop):
    node = cfg
    for k in path[:-1]:
        if k not in node:
            return
        node = node[k]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def rejected_key(msg, cfg):
    """The key path an old config parser rejected ("JSON Error: model:decoder:x: Unknown value "k"")."""
    for marker in ('Unknown value "', "Unknown value '", 'Unknown key "', "Unknown key '"):
        if marker in msg:
            key = msg.split(marker, 1)[1].split(marker[-1], 1)[0]
            before = msg.split(marker, 1)[0].rstrip(": ")
            prefix = before.rsplit("JSON Error:", 1)[-1].strip() if "JSON Error:" in before else ""
            path = tuple(p for p in prefix.split(":") if p) + (key,)
            node = cfg
            for k in path[:-1]:
                node = node.get(k, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict) and key in node:
                return path
            return find_key(cfg, key)
    return None


def load(folder, drop_unknown):
    """(model, notes, dropped): CPU provider only; copies the folder where the runtime needs edits."""
    notes, dropped = [], []
    has_clear = hasattr(og, "Config") and hasattr(og.Config, "clear_providers")
    cfg0 = json.load(open(os.path.join(folder, "genai_config.json")))
    has_prov = bool(cfg0["model"]["decoder"].get("session_options", {}).get("provider_options"))
    edits = rewrites()
    if edits:
        notes.append("rewritten (COMPAT_REWRITE): " + os.environ["COMPAT_REWRITE"])
    if has_prov and not has_clear:
        notes.append("no Config.clear_providers: provider_options [] in a copy")

    def edit(c):
        if has_prov and not has_clear:
            no_providers(c)
        for path, value, drop in edits:
            apply_rewrite(c, path, value, drop)
        for d in dropped:
            drop_path(c, d)

    path = copy_folder(folder, edit) if edits or (has_prov and not has_clear) else folder
    for _ in range(12):
        try:
            if has_clear:
                c = og.Config(path)
                c.clear_providers()
                return og.Model(c), notes, [".".join(d) for d in dropped]
            return og.Model(path), notes, [".".join(d) for d in dropped]
        except Exception as e:  # noqa: BLE001
            where = rejected_key(str(e), json.load(open(os.path.join(path, "genai_config.json"))))
            if not (drop_unknown and where):
                raise
            dropped.append(where)
            notes.append(f"rejected: {err(e)}")
            path = copy_folder(folder, edit)
    raise RuntimeError("too many unknown keys")


def chat_template(tok, template_str):
    if not hasattr(tok, "apply_chat_template"):
        return None, "no Tokenizer.apply_chat_template"
    m = json.dumps(MESSAGES)
    tries = [lambda: tok.apply_chat_template(m, add_generation_prompt=True),
             lambda: tok.apply_chat_template(messages=m, add_generation_prompt=True),
             lambda: tok.apply_chat_template(template_str="", messages=m, add_generation_prompt=True),
             lambda: tok.apply_chat_template(template_str, m, True)]
    last = None
    for t in tries:
        try:
            return t(), None
        except TypeError as e:
            last = e
        except Exception as e:  # noqa: BLE001
            return None, err(e)
    return None, err(last)


def generate(model, ids):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + N_NEW, do_sample=False)
    if hasattr(og.Generator, "append_tokens"):  # GenAI >= 0.6
        gen = og.Generator(model, params)
        gen.append_tokens(np.array([ids], dtype=np.int32))
    else:
        params.input_ids = np.array([ids], dtype=np.int32)
        gen = og.Generator(model, params)
    out = []
    while not gen.is_done() and len(out) < N_NEW:
        if hasattr(gen, "compute_logits"):
            gen.compute_logits()
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out


def probe(folder, ref, drop_unknown):
    r = {"variant": os.path.basename(folder.rstrip("/"))}
    stage(r, "load")
    try:
        model, notes, dropped = load(folder, drop_unknown)
    except Exception as e:  # noqa: BLE001
        r["load"] = err(e)
        return r
    r["load"] = "ok"
    r["notes"], r["dropped_keys"] = notes, dropped
    stage(r, "tokenizer")
    try:
        tok = og.Tokenizer(model)
    except Exception as e:  # noqa: BLE001
        r["tokenizer"] = err(e)
        return r
    r["tokenizer"] = "ok"
    stage(r, "encode")
    try:
        r["encode"] = [list(map(int, tok.encode(s))) for s in STRINGS]
        r["decode"] = [tok.decode(ids) for ids in r["encode"]]
    except Exception as e:  # noqa: BLE001
        r["encode_error"] = err(e)
    stage(r, "chat_template")
    tmpl_src = json.load(open(os.path.join(folder, "tokenizer_config.json"))).get("chat_template", "")
    prompt, r["chat_template_error"] = chat_template(tok, tmpl_src)
    r["chat_template"] = prompt
    if prompt is None:  # render with the reference's text so generation can still be compared
        prompt = (ref or {}).get(r["variant"], {}).get("chat_template")
        r["prompt_from"] = "reference"
    if prompt is None:
        r["generate"] = "no prompt"
        return r
    try:
        ids = list(map(int, tok.encode(prompt)))
        r["prompt_ids"] = ids
        stage(r, "generate")
        r["tokens"] = generate(model, ids)
        r["generate"] = "ok"
        r["text"] = tok.decode(r["tokens"])
    except Exception as e:  # noqa: BLE001
        r["generate"] = err(e)
        r["traceback"] = traceback.format_exc()[-1500:]
    return r


def one(folder, ref_path, drop_unknown, part):
    """One variant in this process; the partial result is rewritten after each stage (crash-safe)."""
    ref = json.load(open(ref_path))["variants"] if ref_path != "-" and os.path.exists(ref_path) else None
    global STAGE_FILE
    STAGE_FILE = part
    stage(probe(folder, ref, drop_unknown), "done")


STAGE_FILE = None


def stage(r, name):
    r["stage"] = name
    if STAGE_FILE:
        json.dump(r, open(STAGE_FILE, "w"), ensure_ascii=False)


def main():
    if sys.argv[1] == "--one":
        return one(sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5])
    import subprocess
    out, ref_path, drop, folders = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    res = {"onnxruntime_genai": getattr(og, "__version__", "?"),
           "api": {"Config": hasattr(og, "Config"),
                   "clear_providers": hasattr(og, "Config") and hasattr(og.Config, "clear_providers"),
                   "apply_chat_template": hasattr(og.Tokenizer, "apply_chat_template"),
                   "append_tokens": hasattr(og.Generator, "append_tokens")},
           "variants": {}}
    try:
        import onnxruntime
        res["onnxruntime"] = onnxruntime.__version__
    except Exception as e:  # noqa: BLE001
        res["onnxruntime"] = err(e)
    for f in folders:
        part = out + "." + os.path.basename(f.rstrip("/")) + ".part"
        if os.path.exists(part):
            os.remove(part)
        p = subprocess.run([sys.executable, __file__, "--one", f, ref_path, drop, part],
                           capture_output=True, text=True)
        r = json.load(open(part)) if os.path.exists(part) else {"variant": os.path.basename(f.rstrip("/"))}
        if p.returncode != 0 or r.get("stage") != "done":
            last = (p.stderr.strip().splitlines() or ["?"])[-1]
            last = ("Assertion" + last.split("Assertion", 1)[1] if "Assertion" in last else last)[:300]
            failed = f"process died (exit {p.returncode}) during {r.get('stage', 'import')}: {last}"
            r.setdefault("crash", failed)
            if r.get("stage") in (None, "load"):
                r["load"] = failed
            elif r.get("stage") == "tokenizer":
                r["tokenizer"] = failed
            elif r.get("stage") == "encode":
                r["encode_error"] = failed
            elif r.get("stage") == "chat_template":
                r["chat_template_error"] = failed
            else:
                r["generate"] = failed
        res["variants"][r["variant"]] = r
    json.dump(res, open(out, "w"), indent=1, ensure_ascii=False)


main()
PY

# --- the comparison (one markdown row) -----------------------------------------------------------
compare="$COMPAT_DIR/compare.py"
cat >"$compare" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))
res = json.load(open(sys.argv[2]))
fails = []
loads = gens = toks = tmpls = True
edited = False
for k, rv in ref["variants"].items():
    v = res["variants"].get(k, {})
    if v.get("load") != "ok" or v.get("tokenizer") != "ok":
        loads = gens = toks = False
        fails.append(f"{k}: {v.get('load') if v.get('load') != 'ok' else 'tokenizer: ' + str(v.get('tokenizer'))}")
        continue
    if v.get("dropped_keys"):
        fails.append(f"{k}: loads only without {', '.join(v['dropped_keys'])}")
        loads = False
    if v.get("encode") != rv.get("encode"):
        toks = False
        fails.append(f"{k}: encode differs" + (f" ({v['encode_error']})" if v.get("encode_error") else ""))
    if v.get("chat_template") != rv.get("chat_template"):
        tmpls = False
        if v.get("chat_template_error"):
            fails.append(f"{k}: chat template: {v['chat_template_error']}")
        else:
            fails.append(f"{k}: chat template text differs")
    if v.get("generate") != "ok":
        gens = False
        fails.append(f"{k}: generate: {v.get('generate')}")
    elif v.get("tokens") != rv.get("tokens"):
        gens = False
        fails.append(f"{k}: tokens {v.get('tokens')} != {rv.get('tokens')}")
    if v.get("prompt_from") == "reference":
        fails.append(f"{k}: prompt text taken from the reference")
    for n in v.get("notes", []):
        if n.startswith(("no Config.clear_providers", "rewritten")):
            fails.append(n if n.startswith("rewritten") else f"{k}: {n}")
    edited = edited or bool(v.get("dropped_keys")) or any(n.startswith("rewritten") for n in v.get("notes", []))
yn = lambda b: "yes" if b else "no"
api = res.get("api", {})
tmpl_cell = yn(tmpls) if api.get("apply_chat_template") else "no API"
gen_cell = yn(gens) + (" (edited copy)" if gens and edited else "")
print(f"| {res['onnxruntime_genai']} | {res.get('onnxruntime')} | {yn(loads)} | {gen_cell} | {yn(toks)} | "
      f"{tmpl_cell} | {'; '.join(dict.fromkeys(fails)) or '-'} |")
PY

folders=()
for k in "${VARIANTS[@]}"; do folders+=("$COMPAT_DIR/$k"); done
DROP="${COMPAT_DROP_UNKNOWN:-1}"

# --- 2. reference --------------------------------------------------------------------------------
ref="$COMPAT_DIR/results/reference.json"
COMPAT_REWRITE= "$repo/.venv/bin/python" "$probe" "$ref" - 0 "${folders[@]}"

# the anchor: a plain onnxruntime greedy loop (position_ids 0..n-1, all-ones mask, growing KV cache) on
# the same prompt ids must give the reference's tokens, so "same as the reference" means "correct"
"$repo/.venv/bin/python" - "$ref" "${folders[@]}" <<'PY'
import json, os, sys
import numpy as np, onnxruntime as ort
ref = json.load(open(sys.argv[1]))["variants"]
for folder in sys.argv[2:]:
    k = os.path.basename(folder.rstrip("/"))
    s = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    outs = [o.name for o in s.get_outputs()]
    cur, past, toks = np.array([ref[k]["prompt_ids"]], dtype=np.int64), {}, []
    for _ in range(len(ref[k]["tokens"])):
        total = sum(v.shape[2] for n, v in past.items() if n.endswith(".0.key")) + cur.shape[1]
        feed = {"input_ids": cur, "attention_mask": np.ones((1, total), np.int64)}
        if "position_ids" in ins:
            feed["position_ids"] = np.arange(total - cur.shape[1], total, dtype=np.int64)[None]
        for n, i in ins.items():
            if n.startswith("past_key_values"):
                dt = np.float16 if "float16" in i.type else np.float32
                head_size = json.load(open(os.path.join(folder, "genai_config.json")))["model"]["decoder"]["head_size"]
                feed[n] = past.get(n, np.zeros((1, i.shape[1], 0, head_size), dt))
        res = dict(zip(outs, s.run(None, feed)))
        toks.append(int(res["logits"][0, -1].argmax()))
        past = {n.replace("present", "past_key_values"): v for n, v in res.items() if n.startswith("present")}
        cur = np.array([[toks[-1]]], dtype=np.int64)
    ok = toks == ref[k]["tokens"]
    print(f"anchor {k}: plain onnxruntime {ort.__version__} greedy {'==' if ok else '!='} reference", file=sys.stderr)
    if not ok:
        sys.exit(f"anchor failed for {k}: {toks} != {ref[k]['tokens']}")
PY

# --- 3. each version -----------------------------------------------------------------------------
echo "| onnxruntime-genai | onnxruntime | loads | same greedy tokens | tokenizer same | chat template | what failed |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
"$PYTHON" "$compare" "$ref" "$ref"
for v in "${versions[@]}"; do
  tag="$v${ORT_SPEC:+-$(echo "$ORT_SPEC" | tr -c 'A-Za-z0-9.\n' '_')}"
  venv="$OG_VENVS/$tag"
  log="$COMPAT_DIR/results/install-$tag.log"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime_genai" >/dev/null 2>&1; then
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "onnxruntime-genai==$v" $ORT_SPEC >"$log" 2>&1 \
      || { echo "| $v | - | no | no | no | - | pip install failed (see $log) |"; continue; }
    if ! "$venv/bin/python" -c "import onnxruntime_genai" >>"$log" 2>&1; then
      "$venv/bin/pip" install -q --disable-pip-version-check "numpy<2" >>"$log" 2>&1 || true
    fi
  fi
  rtag="$tag${COMPAT_REWRITE:+-rw-$(echo "$COMPAT_REWRITE" | tr -c 'A-Za-z0-9.\n' '_')}"
  out="$COMPAT_DIR/results/$rtag.json"
  if ! "$venv/bin/python" "$probe" "$out" "$ref" "$DROP" "${folders[@]}" >"$COMPAT_DIR/results/$rtag.log" 2>&1; then
    echo "| $v | - | no | no | no | - | probe crashed: $(tail -n 1 "$COMPAT_DIR/results/$rtag.log") |"
    continue
  fi
  "$PYTHON" "$compare" "$ref" "$out"
done
