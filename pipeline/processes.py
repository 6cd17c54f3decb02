"""How the library starts a helper process in another environment (the NPU library's ``python -m aipc_npu``):
a plain subprocess, unless the process machinery above the library registered a faster way. Under ``dvc
repro`` that is ``aipc.worker.start_process``, a fork of the environment's warm worker; the library never
imports the machinery, the machinery registers itself here when it is imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Starter = Callable[..., Any]
_starters: list[Starter] = []


def register(starter: Starter) -> None:
    """Add ``starter(profile, python, module, args, env, cwd, stdin, stdout, stderr)``: a Popen-like object,
    or None when it does not apply (then the next one, or a plain subprocess, is used)."""
    if starter not in _starters:
        _starters.append(starter)


def start(profile: str, python: str, module: str, args: list[str], env: dict[str, str], cwd: str,
          stdin: int | None, stdout: int | None, stderr: int) -> Any:
    """The first registered starter's process, or None (the caller starts a subprocess)."""
    for starter in _starters:
        proc = starter(profile, python, module, args, env, cwd, stdin, stdout, stderr)
        if proc is not None:
            return proc
    return None
