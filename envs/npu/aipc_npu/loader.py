"""Open an intel-npu-acceleration-library model made by aipc, and chat with it.

This one file is shipped inside every NPU bundle as ``aipc_npu_loader.py`` (its sha256 is in the
bundle's ``manifest.json``), so whoever downloads a bundle needs nothing of aipc. It imports only the
standard library; :func:`load` then needs the environment the bundle's card names
(intel-npu-acceleration-library, torch and transformers at the recorded versions)::

    import sys; sys.path.insert(0, folder)
    from aipc_npu_loader import load
    model = load(folder)
    print(model.generate([{"role": "user", "content": "Hello"}], max_new_tokens=48)["text"])

``model.pt`` is a torch pickle (``torch.load`` of it runs code), so :func:`load` refuses any file
whose sha256 differs from the recorded one and any environment whose torch / transformers / library
versions differ from those the pickle was written with, before anything is unpickled; the pickle is
unpickled from the very file object that was hashed.

aipc's own NPU worker (``python -m aipc_npu``) uses the same functions, so what a bundle's smoke
and validation stages measured is what this loader gives.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import IO, Any

MODEL_FILE = "model.pt"
BUNDLE_MANIFEST = "manifest.json"   # a published bundle
EXPORT_RECORD = "aipc_export.json"  # an artifact folder (the export stage's output)
# The distributions a pickled model is tied to: it loads only where all three are the same.
PICKLE_TIED_TO = ("intel-npu-acceleration-library", "torch", "transformers")
REEXPORT_FIX = "download the bundle again, or re-export it (`aipc export npu VARIANT`); never edit it by hand"
_CHUNK = 1 << 20


class LoaderError(Exception):
    """Why a model was refused; ``kind`` is one of integrity, version_mismatch, environment, usage,
    context_length."""

    def __init__(self, kind: str, message: str, fix: str | None = None):
        super().__init__(message + (f" (fix: {fix})" if fix else ""))
        self.kind = kind
        self.message = message
        self.fix = fix

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


# --------------------------------------------------------------------------- checks (standard library)


def versions(packages: tuple[str, ...] = PICKLE_TIED_TO) -> dict[str, str]:
    """Python's and the installed ``packages``' versions, from package metadata (no heavy import)."""
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LoaderError("integrity", f"{path}: missing", fix=REEXPORT_FIX) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LoaderError("integrity", f"{path}: not valid JSON ({err})", fix=REEXPORT_FIX) from None


def expected_hashes(data: Any, origin: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a manifest / export record (``files`` table) or a plain mapping."""
    table = data.get("files", data) if isinstance(data, dict) else None
    if not isinstance(table, dict) or not table:
        raise LoaderError("integrity", f"{origin}: no sha256 table of the model's files", fix=REEXPORT_FIX)
    out = {}
    for rel, v in table.items():
        sha = v.get("sha256") if isinstance(v, dict) else v
        if not isinstance(sha, str) or len(sha) != 64:
            raise LoaderError("integrity", f"{origin}: no valid sha256 for {rel!r}", fix=REEXPORT_FIX)
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise LoaderError("integrity", f"{origin}: file {rel!r} is outside the model folder", fix=REEXPORT_FIX)
        out[rel] = sha
    if MODEL_FILE not in out:
        raise LoaderError("integrity", f"{origin}: {MODEL_FILE} has no recorded sha256", fix=REEXPORT_FIX)
    return out


def _sha256_stream(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _mismatch(path: Path, want: str, got: str) -> LoaderError:
    return LoaderError("integrity", f"{path}: sha256 {got} does not match the recorded {want}: the file was "
                       "modified or corrupted; refusing to load the model (a pickle runs code when loaded)",
                       fix=REEXPORT_FIX)


def verify_files(folder: Path, table: dict[str, str], skip: tuple[str, ...] = ()) -> None:
    for rel, want in sorted(table.items()):
        if rel in skip:
            continue
        path = folder / rel
        if not path.is_file():
            raise LoaderError("integrity", f"{path}: missing (listed in the sha256 table)", fix=REEXPORT_FIX)
        got = sha256_file(path)
        if got != want:
            raise _mismatch(path, want, got)


def open_verified(path: Path, want: str) -> IO[bytes]:
    """Open ``path``, hash it through that same file object and return it rewound: what is then
    unpickled is exactly what was hashed (no window to swap the file by name)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise LoaderError("integrity", f"{path}: missing", fix=REEXPORT_FIX) from None
    try:
        got = _sha256_stream(f)
        if got != want:
            raise _mismatch(path, want, got)
        f.seek(0)
        return f
    except BaseException:
        f.close()
        raise


def public_version(v: Any) -> str | None:
    """``2.13.0+cpu`` -> ``2.13.0``: a build's local label (CPU, CUDA) does not change what it unpickles."""
    return str(v).split("+")[0] if v is not None else None


def check_versions(recorded: dict[str, Any], origin: str) -> None:
    """The pickle loads only with the versions it was written with."""
    have = versions()
    bad = [f"{k} {recorded.get(k)} (this environment: {have.get(k, 'not installed')})"
           for k in PICKLE_TIED_TO if public_version(recorded.get(k)) != public_version(have.get(k))]
    if bad:
        pins = " ".join(f"{k}=={public_version(recorded.get(k))}" for k in PICKLE_TIED_TO if recorded.get(k))
        raise LoaderError(
            "version_mismatch",
            f"{origin}: the model was written with " + ", ".join(bad) + "; its pickle loads only with the "
            "same " + ", ".join(PICKLE_TIED_TO),
            fix=f"install exactly {pins} (the model card's install line)",
        )


def recorded(folder: Path) -> tuple[dict[str, str], dict[str, Any], str]:
    """(sha256 table, recorded versions, where they came from) of a bundle or an artifact folder."""
    for name, versions_key in ((BUNDLE_MANIFEST, "runtime_env"), (EXPORT_RECORD, "runtime")):
        path = folder / name
        if path.is_file():
            data = read_json(path)
            if not isinstance(data, dict) or data.get("backend") != "npu":
                raise LoaderError("integrity", f"{path}: not the record of an NPU-library model",
                                  fix="point at a bundle or artifact folder of the NPU library (backend npu)")
            return expected_hashes(data, str(path)), data.get(versions_key) or {}, str(path)
    raise LoaderError("usage", f"{folder}: neither {BUNDLE_MANIFEST} nor {EXPORT_RECORD} found",
                      fix="point at the folder of a downloaded bundle (huggingface_hub.snapshot_download)")


# --------------------------------------------------------------------------- the model


def import_library():
    """Import the library (its classes must exist before the pickle is read); no NPU = OpenVINO's CPU."""
    import warnings

    # neural-compressor imports pkg_resources (deprecation warning); the library warns when no NPU is present
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    warnings.filterwarnings("ignore", message="NPU is not available.*")
    warnings.filterwarnings("ignore", message="OpenVINO library is already loaded.*")
    try:
        import intel_npu_acceleration_library as npu
        from intel_npu_acceleration_library.backend import npu_available
    except Exception as err:  # noqa: BLE001 - any import failure means a broken environment
        raise LoaderError("environment", f"intel_npu_acceleration_library does not import in {sys.prefix}: "
                          f"{type(err).__name__}: {err}",
                          fix="install the versions of the model card's install line") from err
    return npu, bool(npu_available())


def context_length(config: dict[str, Any]) -> int | None:
    v = config.get("max_position_embeddings")
    return int(v) if isinstance(v, int) and v > 0 else None


class ChatModel:
    """A loaded model: greedy chat generation and teacher-forcing logits."""

    def __init__(self, folder: Path, model, tokenizer, npu_present: bool):
        self.folder = Path(folder)
        self.model = model
        self.tokenizer = tokenizer
        self.npu_present = npu_present
        self.device = "NPU" if npu_present else "CPU"
        self.context_length = context_length(read_json(self.folder / "config.json"))
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids = set()
        gen = self.folder / "generation_config.json"
        for source in ([read_json(gen)] if gen.is_file() else []) + [read_json(self.folder / "config.json")]:
            v = source.get("eos_token_id")
            ids.update(v if isinstance(v, list) else [v] if isinstance(v, int) else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return sorted(ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse what does not fit the model's context window (config.json max_position_embeddings)."""
        n = self.context_length
        if n is not None and prompt_tokens + max_new_tokens > n:
            raise LoaderError(
                "context_length",
                f"the prompt is {prompt_tokens} tokens and max_new_tokens {max_new_tokens}: together "
                f"{prompt_tokens + max_new_tokens}, more than the model's context window of {n} tokens",
                fix=f"shorten the prompt or lower max_new_tokens to at most {max(n - prompt_tokens, 0)}")

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, Any]:
        """Greedy decoding with the KV cache; the chat template applied once, no special tokens added."""
        import torch

        prompt = self.chat_prompt(messages)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        self.check_context(int(ids.shape[1]), max_new_tokens)
        eos = set(self.eos_ids)
        out_ids: list[int] = []
        stopped = "max_new_tokens"
        t0 = time.perf_counter()
        first = None
        with torch.no_grad():
            out = self.model(input_ids=ids, use_cache=True)
            while True:
                nxt = int(out.logits[0, -1].argmax())
                if first is None:
                    first = time.perf_counter() - t0
                if nxt in eos:
                    stopped = "eos"
                    break
                out_ids.append(nxt)
                if len(out_ids) >= max_new_tokens:
                    break
                out = self.model(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
        total = time.perf_counter() - t0
        return {
            "prompt": prompt,
            "text": self.tokenizer.decode(out_ids, skip_special_tokens=True),
            "token_ids": out_ids,
            "stopped_by": stopped,
            "first_token_s": first if first is not None else total,
            "total_s": total,
            "prompt_tokens": int(ids.shape[1]),
        }

    def logits(self, ids: list[int]):
        """float32 [len(ids), vocab]: row i is the next-token distribution after ids[: i + 1]."""
        import torch

        if not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise LoaderError("usage", "ids must be a non-empty list of token ids")
        vocab = self.model.config.vocab_size
        if max(ids) >= vocab:
            raise LoaderError("usage", f"token id {max(ids)} is outside the vocabulary ({vocab})")
        self.check_context(len(ids), 0)
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), use_cache=False)
        return out.logits[0].float().numpy()


def unpickle(folder: Path, table: dict[str, str]) -> ChatModel:
    """``torch.load`` the model from the file object whose sha256 was just checked, then its tokenizer."""
    f = open_verified(folder / MODEL_FILE, table[MODEL_FILE])
    try:
        _npu, npu_present = import_library()
        import torch
        from transformers import AutoTokenizer
    except BaseException:
        f.close()
        raise
    with f:
        model = torch.load(f, weights_only=False)  # a pickle: only after the sha256 check above
    model.eval()
    return ChatModel(folder, model, AutoTokenizer.from_pretrained(str(folder)), npu_present)


def load(folder: str | Path) -> ChatModel:
    """Check a bundle (or artifact) folder, then load its model: every file's sha256 against the folder's
    ``manifest.json`` (or ``aipc_export.json``), the installed versions against the recorded ones."""
    folder = Path(folder)
    table, pinned, origin = recorded(folder)
    verify_files(folder, table, skip=(MODEL_FILE,))  # the pickle is hashed through the object it loads from
    check_versions(pinned, origin)
    return unpickle(folder, table)
