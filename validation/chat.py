"""Run any bundle the seed's three ways (OpenVINO, ORT GenAI, the NPU library), through the same
runner interface the validation uses. Backs `aipc generate` and `aipc chat`."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

from aipc.pipeline.config import NPUSection, OpenVINORuntime, Params
from aipc.pipeline.errors import ConfigError, EnvironmentProblem
from aipc.pipeline.fsutil import read_json

from .runners.base import Generation, Runner, Sampling

log = logging.getLogger(__name__)

DEVICES = {
    "openvino": ("CPU", "GPU", "NPU", "AUTO"),   # plus GPU.<n>
    "ortgenai": ("CPU", "DML", "AUTO"),
    "npu": ("NPU", "CPU", "AUTO"),
}
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def detect_backend(folder: Path) -> str:
    for name in ("manifest.json", "aipc_export.json"):
        if (folder / name).is_file():
            backend = read_json(folder / name).get("backend")
            if backend in DEVICES:
                return backend
    raise ConfigError(f"{folder}: not a bundle or artifact of this project (no manifest.json / aipc_export.json)",
                      fix="pass a folder under artifacts/bundles/ (or artifacts/<backend>/<variant>/), or a Hub repo id")


def fetch_bundle(repo_id: str, revision: str | None = None) -> Path:
    """Download a published bundle into the Hub cache and verify every file against its manifest."""
    from huggingface_hub import snapshot_download

    from aipc.pipeline.package import manifest as mf
    from aipc.pipeline.package import signing
    from aipc.pipeline.publish import hub_error

    try:
        folder = Path(snapshot_download(repo_id, revision=revision))
    except Exception as err:  # noqa: BLE001
        raise hub_error(err, repo_id, "downloading") from None
    m = mf.read_manifest(folder, where=repo_id)
    mf.check_files(folder, m, where=repo_id, allow_extra=(*mf.HUB_FILES, signing.SIGNATURE),
                   fix="delete the cached copy (huggingface-cli / hf cache) and download again")
    return folder


def resolve(target: str) -> Path:
    p = Path(target)
    if p.is_dir():
        return p
    if _REPO_RE.match(target) and not p.exists():
        return fetch_bundle(target)
    raise ConfigError(f"{target!r}: no such folder, and not a Hub repo id (namespace/name)",
                      fix="pass a bundle folder (e.g. artifacts/bundles/openvino-int4) or a repo id")


def check_device(backend: str, device: str) -> str:
    device = device.upper()
    ok = DEVICES[backend]
    if device in ok or (backend == "openvino" and re.fullmatch(r"GPU\.\d+", device)):
        return device
    raise ConfigError(f"--device {device!r} is not a device for {backend} bundles",
                      fix=f"use one of: {', '.join(ok)}" + (" or GPU.<n>" if backend == "openvino" else ""))


def open_bundle(folder: Path, device: str, params: Params | None, runtime_overrides: dict[str, Any]) -> Runner:
    backend = detect_backend(folder)
    device = check_device(backend, device)
    if backend == "openvino":
        from .runners.openvino import OpenVINORunner

        runtime = params.openvino.runtime if params else OpenVINORuntime()
        runtime = runtime.model_copy(update={"device": device, **{k: v for k, v in runtime_overrides.items() if v}})
        return OpenVINORunner(folder, runtime)
    if backend == "ortgenai":
        from .runners.ortgenai import OrtGenAIRunner, _available_providers

        if device == "DML" and "dml" not in _available_providers():
            log.warning("DirectML is not available on this machine (onnxruntime providers: %s): running on CPU",
                        ", ".join(sorted(_available_providers())))
        return OrtGenAIRunner(folder, device="cpu" if device == "CPU" else "auto")
    from .runners.npu import NPURunner

    npu = params.npu if params else NPUSection(variants={})
    return NPURunner(folder, npu)


def answer(runner: Runner, messages: list[dict[str, str]], sampling: Sampling,
           write: Callable[[str], None]) -> tuple[Generation, dict[str, float]]:
    gen = runner.stream(messages, sampling, write)
    n = len(gen.token_ids)
    decode_s = max(gen.total_s - gen.first_token_s, 1e-9)
    stats = {"first_token_s": gen.first_token_s, "new_tokens": n,
             "tokens_per_s": (n - 1) / decode_s if n > 1 else 0.0}
    return gen, stats


def require_runtime(backend: str) -> None:
    mods = {"openvino": "openvino_genai", "ortgenai": "onnxruntime_genai"}
    if backend in mods:
        import importlib.util

        if importlib.util.find_spec(mods[backend]) is None:
            raise EnvironmentProblem(f"the {mods[backend]} runtime is not installed",
                                     fix="run `bash scripts/setup.sh` (or pip install the version in pyproject.toml)")
