"""Bundles: the folder a backend loads directly, plus ``manifest.json``, a model card and the license files.

``artifacts/bundles/<backend>-<variant>/`` holds every file of ``artifacts/<backend>/<variant>/``
(hard-linked when possible, else copied; never modified in place), the source's LICENSE/NOTICE
files, ``README.md`` (:mod:`.card`) and ``manifest.json`` (:mod:`.manifest`). It is written under a
temp name and renamed, like every stage output. Failed validations do not stop a bundle from being
built (the card shows them); ``aipc publish`` refuses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import paths
from ..errors import ConfigError, PublishError
from ..fsutil import atomic_dir, write_json
from . import binding, card, manifest, signing

log = logging.getLogger(__name__)

BACKENDS = ("openvino", "ortgenai", "npu")
BUNDLES = paths.ARTIFACTS / "bundles"


def bundle_dir(backend: str, variant: str) -> Path:
    return BUNDLES / f"{backend}-{variant}"


def check_variant(params, backend: str, variant: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}", fix=f"use one of: {', '.join(BACKENDS)}")
    variants = getattr(params, backend).variants
    if variant not in variants:
        raise ConfigError(f"params.yaml: {backend}.variants has no {variant!r}",
                          fix=f"use one of: {', '.join(variants) or '(none defined)'}")


def _place(src: Path, dst: Path) -> None:
    """Hard-link (or copy) ``src`` to ``dst``; a link is never written through (files are replaced)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` (never write through a hard link)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def build_bundle(params, backend: str, variant: str, workspace: Path = Path("."), *,
                 artifact_dir: Path | None = None, source_dir: Path | None = None,
                 smoke_metrics: Path | None = None, validate_metrics: Path | None = None,
                 out_dir: Path | None = None) -> Path:
    """Build the bundle of ``backend``/``variant``; paths default to the workspace layout (pipeline.paths)."""
    check_variant(params, backend, variant)
    ws = Path(workspace)
    artifact_dir = Path(artifact_dir or ws / paths.artifact_dir(backend, variant))
    source_dir = Path(source_dir or ws / paths.source_dir())
    smoke_metrics = Path(smoke_metrics or ws / paths.smoke_metrics(backend, variant))
    validate_metrics = Path(validate_metrics or ws / paths.METRICS / "validate" / f"{backend}-{variant}.json")
    out_dir = Path(out_dir or ws / bundle_dir(backend, variant))
    if not artifact_dir.is_dir():
        raise PublishError(f"{artifact_dir}: no such artifact",
                           fix=f"run `dvc repro` (or `aipc export {backend} {variant}`) first")
    body = manifest.build_manifest(params, backend, variant, artifact_dir, source_dir, smoke_metrics, validate_metrics)
    # the artifact's files are the bytes dvc.lock records for the stage that made them (when DVC made them)
    record = binding.dvc_record(ws, artifact_dir)
    if record is not None:
        binding.check(artifact_dir, record, where=str(artifact_dir),
                      fix=f"rebuild it: `dvc repro {record['stage']}` (or `dvc checkout {record['out']}`)")
    body["build"] = binding.manifest_entry(record, Path(__file__).resolve().parents[2])
    generated = {manifest.MANIFEST, manifest.CARD, signing.SIGNATURE, signing.PUBLIC_KEY}
    with atomic_dir(out_dir) as tmp, signing.signing_key(params.bundle.public_key) as key:
        for src in sorted(artifact_dir.rglob("*")):
            rel = src.relative_to(artifact_dir)
            if src.is_file() and rel.as_posix() not in generated:
                _place(src, tmp / rel)
        for lic in manifest.license_files(source_dir):
            if (tmp / lic.name).exists():
                log.warning("%s: the artifact has its own %s; the source's replaces it", out_dir, lic.name)
            _place(lic, tmp / lic.name)
        # the public half of the key that signs it (identifies the signer; trust needs the publisher's copy)
        (tmp / signing.PUBLIC_KEY).write_bytes(key.public_pem)
        body["signature"] = {"file": signing.SIGNATURE, "public_key": signing.PUBLIC_KEY, "fingerprint": key.fingerprint,
                             "key": "release" if params.bundle.public_key else "development",
                             "format": "OpenSSF model-signing (Sigstore bundle, elliptic-curve key)",
                             "tools": signing.tool_versions()}
        # the card is rendered from the manifest without README.md's own entry; then README.md is listed too
        _write_text(tmp / manifest.CARD, card.render(manifest.finish(body, tmp)))
        full = manifest.finish(body, tmp)
        write_json(tmp / manifest.MANIFEST, manifest.manifest_json(full))
        signing.sign(tmp, key)  # last: model.sig covers every file above, manifest.json and the card included
    total = sum(f["size"] for f in full["files"].values())
    log.info("bundle %s: %d files, %s -> %s", out_dir, len(full["files"]), card.human(total), full["repo_id"])
    return out_dir
