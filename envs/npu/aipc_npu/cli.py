"""``python -m aipc_npu COMMAND``: JSON on stdout, errors as JSON plus an exit code.

stdout carries only our JSON: the library and its dependencies print (``Compiling model ...``) and
OpenVINO's C++ code may write too, so file descriptor 1 is pointed at stderr and the JSON goes
through a private duplicate of the original stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

from . import __version__
from .artifact import chdir_private, check_platform, manifest_path, versions
from .errors import NPUError, exit_code
from .loader import LoaderError


class _Out:
    def __init__(self) -> None:
        sys.stdout.flush()
        self.f: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # whatever else writes to stdout (Python or C++) goes to stderr
        sys.stdout = sys.stderr

    def send(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.f.flush()


def _abs(p: str | None) -> Path | None:
    return Path(p).resolve() if p else None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m aipc_npu", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions of this environment (fast; add --device to probe the NPU)") \
        .add_argument("--device", action="store_true", help="also load the library and report NPU presence")

    c = sub.add_parser("compile", help="compile a transformers checkpoint into an artifact folder")
    c.add_argument("--src", required=True, help="transformers checkpoint folder (safetensors)")
    c.add_argument("--out", required=True, help="artifact folder to write (model.pt + tokenizer/config files)")
    c.add_argument("--dtype", required=True, choices=("int4", "int8", "fp16"), help="CompilerConfig dtype")

    def artifact_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--artifact", required=True, help="artifact folder (model.pt, tokenizer, aipc_export.json)")
        p.add_argument("--manifest", help="export record (default: ARTIFACT/aipc_export.json)")
        p.add_argument("--expect-sha256-json", help="sha256 table to check instead of the manifest's "
                       "({path: sha256} or a manifest)")

    g = sub.add_parser("generate", help="greedy chat generation")
    artifact_args(g)
    g.add_argument("--prompt-json", required=True, help="chat messages: a JSON list, or a file holding one")
    g.add_argument("--max-new-tokens", type=int, default=48)

    lg = sub.add_parser("logits", help="teacher-forcing logits of token ids, saved as .npy")
    artifact_args(lg)
    lg.add_argument("--ids-json", required=True, help="token ids: a JSON list, or a file holding one")
    lg.add_argument("--out", required=True, help=".npy file to write (float32 [n, vocab])")

    s = sub.add_parser("serve", help="persistent worker: JSON-line requests on stdin")
    artifact_args(s)
    return ap


def _json_arg(value: str) -> Any:
    text = value
    if not value.lstrip().startswith(("[", "{")):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as err:
            raise NPUError("usage", f"{value}: neither JSON nor a readable file ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise NPUError("usage", f"not valid JSON: {err}") from None


def _session(args):
    from .model import Session

    artifact = _abs(args.artifact)
    return Session(artifact, manifest_path(artifact, str(_abs(args.manifest)) if args.manifest else None),
                   _abs(args.expect_sha256_json))


def _save_npy(arr, out: Path) -> dict[str, Any]:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr.astype(np.float32, copy=False))
    os.replace(tmp, out)
    return {"path": str(out), "shape": list(arr.shape), "dtype": "float32"}


def _serve(args, out: _Out) -> int:
    """Requests: {"id", "op": "chat_prompt"|"generate"|"logits"|"info"|"close", ...}; one response
    line each: {"id", "ok": true, "result": ...} or {"id", "ok": false, "error": {...}}."""
    session = _session(args)
    out.send({"ok": True, "ready": True, "info": {**session.info, "versions": versions(),
                                                  "load_s": round(session.load_s, 3), "eos_ids": session.eos_ids}})
    for line in sys.stdin:
        if not line.strip():
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op")
            if op == "close":
                out.send({"id": rid, "ok": True, "result": None})
                return 0
            if op == "info":
                result: Any = {**session.info, "versions": versions()}
            elif op == "chat_prompt":
                result = session.chat_prompt(req["messages"])
            elif op == "generate":
                result = session.generate(req["messages"], int(req["max_new_tokens"]))
            elif op == "logits":
                result = _save_npy(session.logits(req["ids"]), Path(req["out"]))
            else:
                raise NPUError("usage", f"unknown op {op!r}")
            out.send({"id": rid, "ok": True, "result": result})
        except LoaderError as err:
            out.send({"id": rid, "ok": False, "error": err.to_json()})
        except Exception as err:  # noqa: BLE001 - report and keep serving
            traceback.print_exc()
            out.send({"id": rid, "ok": False, "error": {"kind": "internal",
                                                        "message": f"{type(err).__name__}: {err}", "fix": None}})
    return 0


_PATH_ARGS = ("src", "out", "artifact", "manifest", "expect_sha256_json")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Absolute paths before the process moves to its private working directory.
    for name in _PATH_ARGS:
        if getattr(args, name, None):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    for name in ("prompt_json", "ids_json"):
        value = getattr(args, name, None)
        if value and not value.lstrip().startswith(("[", "{")):
            setattr(args, name, str(Path(value).resolve()))
    out = _Out()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="aipc_npu: %(message)s")
    try:
        check_platform()
        if args.command == "info":
            result: dict[str, Any] = {"ok": True, "versions": versions(), "prefix": sys.prefix}
            if args.device:
                from .model import _library, device_info

                chdir_private()
                result.update(device_info(_library()[1]))
            out.send(result)
            return 0
        chdir_private()
        if args.command == "compile":
            from .model import compile_checkpoint

            out.send(compile_checkpoint(_abs(args.src), _abs(args.out), args.dtype))
        elif args.command == "generate":
            messages = _json_arg(args.prompt_json)
            out.send({"ok": True, **_session(args).generate(messages, args.max_new_tokens)})
        elif args.command == "logits":
            ids = _json_arg(args.ids_json)
            target = _abs(args.out)
            out.send({"ok": True, **_save_npy(_session(args).logits(ids), target)})
        elif args.command == "serve":
            return _serve(args, out)
        return 0
    except LoaderError as err:
        out.send({"ok": False, "error": err.to_json()})
        return exit_code(err)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        out.send({"ok": False, "error": {"kind": "internal", "message": f"{type(err).__name__}: {err}", "fix": None}})
        return 1
