"""The bundle manifest: what a published bundle is, where it came from, and proof of every byte.

``manifest.json`` is deterministic: it is built only from its inputs (the artifact's
``aipc_export.json``, ``artifacts/source/source.json``, the validation metrics files, params.yaml and
the bundle's files), serialized with sorted keys and no timestamps, so the same inputs give the same
bytes. It lists the sha256 and size of every other file of the bundle (``README.md`` included);
:func:`check_files` is the one check that a folder still matches its manifest, used by
``aipc publish`` (before uploading) and ``aipc verify`` (after downloading).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import PublishError
from ..fsutil import file_table, read_json
from ..records import EXPORT_JSON, Manifest, SmokeRecord, ValidateRecord, first_problem, read_export_record

log = logging.getLogger(__name__)

SCHEMA = Manifest.SCHEMA
MANIFEST = "manifest.json"
CARD = "README.md"
SOURCE_JSON = "source.json"
# files the Hub adds to every repo; tolerated by `aipc verify`, never part of a bundle
HUB_FILES = (".gitattributes",)

LIBRARY = {"openvino": "openvino", "ortgenai": "onnxruntime-genai", "npu": "intel-npu-acceleration-library"}
# toolchain entries the card's "minimum runtime" falls back to when the export record has none
RUNTIME_PACKAGES = {
    "openvino": ("openvino", "openvino-tokenizers", "openvino-genai", "optimum-intel"),
    "ortgenai": ("onnxruntime-genai",),
    "npu": ("intel-npu-acceleration-library", "transformers", "torch"),
}


# --------------------------------------------------------------------------- source facts


def _license_from_text(text: str) -> str | None:
    """A Hub license id from a LICENSE file's text (the common licenses only)."""
    t = " ".join(text.split())
    low = t.lower()
    if "mit license" in low or "permission is hereby granted, free of charge" in low:
        return "mit"
    if "apache license" in low and "version 2.0" in low:
        return "apache-2.0"
    if "gnu general public license" in low and "version 3" in low and "lesser" not in low:
        return "gpl-3.0"
    if "redistribution and use in source and binary forms" in low:
        return "bsd-3-clause" if "neither the name" in low else "bsd-2-clause"
    if "creative commons attribution 4.0" in low:
        return "cc-by-4.0"
    return None


def license_files(source_dir: Path) -> list[Path]:
    """The source's LICENSE* and NOTICE* files (carried over into every bundle)."""
    return sorted(p for p in source_dir.iterdir()
                  if p.is_file() and re.match(r"^(LICENSE|LICENCE|NOTICE|COPYING)", p.name, re.IGNORECASE))


def detect_license(params, record: dict[str, Any], source_dir: Path) -> tuple[str | None, str]:
    """(Hub license id or None, where it came from)."""
    if params.bundle.license:
        return params.bundle.license, "params.yaml bundle.license"
    prov = record.get("provenance") or {}
    if isinstance(prov.get("license"), str) and prov["license"]:
        return prov["license"].lower(), "source.json provenance"
    for p in license_files(source_dir):
        if p.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            found = _license_from_text(p.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found, f"source {p.name} file"
    return None, "unknown"


def source_facts(params, source_dir: Path) -> dict[str, Any]:
    """The ``source`` block: what the bundle was built from, without machine-specific paths."""
    path = source_dir / SOURCE_JSON
    if not path.is_file():
        raise PublishError(f"{path}: missing, so the bundle can't name its source",
                           fix="run `dvc repro` (or `aipc download`) first")
    record = read_json(path)
    kind = record.get("source")
    files = record.get("files") or {}
    weights = sorted(meta["sha256"] for name, meta in files.items() if name.endswith(".safetensors"))
    weights_digest = hashlib.sha256("".join(weights).encode()).hexdigest()
    prov = record.get("provenance") or {}
    out: dict[str, Any] = {"kind": kind, "name": record.get("name"), "files": files}
    if kind == "hub":
        out.update(repo_id=record["repo_id"], revision=record.get("revision"), commit=record["commit"],
                   pinned=record.get("pinned"))
        out["ref"] = f"{record['repo_id']}@{record['commit']}"
    elif kind == "embedded":
        out["provenance"] = prov
        out["ref"] = (f"embedded {prov.get('package', '?')}=={prov.get('package_version', '?')} "
                      f"({prov.get('gguf_file', '?')} sha256 {str(prov.get('gguf_sha256', '?'))[:16]})")
    else:
        out["ref"] = f"local checkpoint (weights sha256 {weights_digest[:16]})"
    out["weights_sha256"] = weights_digest
    base = params.bundle.base_model or (record.get("repo_id") if kind == "hub" else None) or prov.get("base_model")
    out["base_model"] = base
    lic, how = detect_license(params, record, source_dir)
    out["license"] = lic
    out["license_from"] = how
    out["license_files"] = [p.name for p in license_files(source_dir)]
    return out


# --------------------------------------------------------------------------- validation facts


def _smoke_summary(rec: dict[str, Any]) -> dict[str, Any]:
    results = rec.get("results") or []
    first = results[0] if results else {}
    example = ({"id": first.get("id"), "messages": first["messages"], "text": first.get("text")}
               if first.get("messages") else None)  # what the card's snippets run and print
    return {
        "passed": bool(rec.get("passed")),
        "prompts_passed": rec.get("prompts_passed", sum(bool(r.get("passed")) for r in results)),
        "prompts_total": rec.get("prompts_total", len(results)),
        "failed": [{"id": r.get("id"), "failures": r.get("failures", [])} for r in results if not r.get("passed")],
        "notes": sorted({n for r in results for n in (r.get("notes") or []) if isinstance(n, str)}),
        "runtime": {str(k): str(v) for k, v in (rec.get("runtime") or {}).items()},
        **({"max_new_tokens": rec["max_new_tokens"]} if rec.get("max_new_tokens") else {}),
        **({"example": example} if example else {}),
    }


def _validate_summary(rec: dict[str, Any]) -> dict[str, Any]:
    keep = ("passed", "gates", "accuracy", "tokenizer_parity", "smoke", "texts")
    out = {k: rec[k] for k in keep if k in rec}
    out["passed"] = bool(rec.get("passed"))
    return out


def validation_facts(smoke_path: Path | None, validate_path: Path | None) -> dict[str, Any]:
    """Each validation that exists for the artifact, summarized; absent ones are simply not recorded."""
    out: dict[str, Any] = {}
    for name, path, model, summarize in (("smoke", smoke_path, SmokeRecord, _smoke_summary),
                                         ("validate", validate_path, ValidateRecord, _validate_summary)):
        if path is None or not Path(path).is_file():
            continue
        out[name] = summarize(model.read(Path(path)).dump())
    return out


def failed_verdicts(manifest: dict[str, Any]) -> list[str]:
    """Why publishing this bundle is refused (empty list = its validations allow it)."""
    val = manifest.get("validation") or {}
    problems = []
    if "smoke" not in val:
        problems.append("it has no smoke validation (metrics/smoke/<backend>-<variant>.json was absent when it was built)")
    elif not val["smoke"].get("passed"):
        failed = ", ".join(f"{f['id']} ({'; '.join(f['failures'])})" for f in val["smoke"].get("failed", []))
        problems.append(f"smoke generation failed: {failed or 'passed: false'}")
    if "validate" in val and not val["validate"].get("passed"):
        gates = [g for g in val["validate"].get("gates", []) if not g.get("passed")]
        for g in gates:
            problems.append(f"gate {g.get('gate') or g.get('metric')} failed: {g.get('metric')} = {g.get('value')!r}, "
                            f"needs {g.get('op')} {g.get('threshold')!r}")
        if not gates:
            problems.append("accuracy validation failed (passed: false)")
    return problems


# --------------------------------------------------------------------------- the rest


def is_pickle(path: Path) -> bool:
    """True for Python pickles and torch.save zip archives (loading either runs code)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return True
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith((".pkl", "/data.pkl")) for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return path.suffix in (".pkl", ".pickle")


def min_runtime(backend: str, record: dict[str, Any]) -> tuple[dict[str, str], str, bool]:
    """(package -> version, basis, exact): ``exact`` when only those very versions can load the artifact."""
    if record.get("min_runtime"):
        return dict(record["min_runtime"]), "checked minimum (export record)", False
    runtime = record.get("runtime") or {}
    tied = [k for k in record.get("runtime_must_match") or () if k in runtime]
    if tied:  # the NPU pickle: it loads only where these versions match exactly
        return ({k: runtime[k] for k in tied}, "exact versions: the pickle loads only with these "
                "(the bundle's aipc_npu_loader.py checks them)", True)
    tc = {**(record.get("toolchain") or {}), **runtime}
    found = {k: tc[k] for k in RUNTIME_PACKAGES.get(backend, ()) if k in tc}
    return found, "the versions it was built and validated with; older ones are untested", False


def _algorithm_fallback(backend: str, record: dict[str, Any]) -> str:
    """Records written before the ``algorithm`` field, and the NPU library (round-to-nearest per channel)."""
    if backend == "npu":
        return "rtn (per channel)"
    p = record.get("params") or {}
    return "rtn" if "int" in str(p.get("weight_format") or p.get("precision") or "") else "none"


def build_manifest(params, backend: str, variant: str, artifact_dir: Path, source_dir: Path,
                   smoke_path: Path | None, validate_path: Path | None) -> dict[str, Any]:
    """Everything but the ``files`` table (added once the bundle folder is complete)."""
    rec_path = artifact_dir / EXPORT_JSON
    if not rec_path.is_file():
        raise PublishError(f"{rec_path}: missing, so the bundle can't state its settings and toolchain",
                           fix=f"re-export: `aipc export {backend} {variant}` (or `dvc repro`)")
    record = read_export_record(rec_path).dump()
    if record.get("backend") not in (None, backend) or record.get("variant") not in (None, variant):
        raise PublishError(f"{rec_path}: records {record.get('backend')}/{record.get('variant')}, "
                           f"not {backend}/{variant}", fix=f"re-export: `aipc export {backend} {variant}`")
    model = params.model.name
    runtime, basis, exact = min_runtime(backend, record)
    quant = {"params": record.get("params") or {}, "effective": record.get("effective") or {},
             "algorithm": record.get("algorithm") or _algorithm_fallback(backend, record),
             "calibration": record.get("calibration")}
    if record.get("builder_extra_options") is not None:
        quant["builder_extra_options"] = record["builder_extra_options"]
    if not quant["effective"] and record.get("compile"):  # the NPU library: what its compile call did
        quant["effective"] = {k: v for k, v in record["compile"].items() if v is not None}
    extra = {}
    if record.get("runtime"):  # the NPU environment the artifact was written in (not the main toolchain)
        extra["runtime_env"] = record["runtime"]
    if record.get("loader"):
        extra["loader"] = record["loader"]
    if record.get("device_fallback"):
        extra["device_fallback"] = record["device_fallback"]
    return {
        "schema": SCHEMA,
        "name": f"{backend}-{variant}",
        "model": model,
        "backend": backend,
        "variant": variant,
        "repo_id": params.publish.repo_id(model, backend, variant),
        "library_name": LIBRARY[backend],
        "source": source_facts(params, source_dir),
        "quantization": quant,
        "toolchain": record.get("toolchain") or {},
        "min_runtime": runtime,
        "min_runtime_basis": basis,
        "runtime_exact": exact,
        "validation": validation_facts(smoke_path, validate_path),
        **extra,
    }


def finish(manifest: dict[str, Any], bundle_dir: Path) -> dict[str, Any]:
    """Add the sha256/size table of every file (but manifest.json) and the pickle list."""
    files = file_table(bundle_dir, exclude=(MANIFEST,))
    out = dict(manifest)
    out["files"] = files
    out["pickle_files"] = [p for p in files if is_pickle(bundle_dir / p)]
    return out


def read_manifest(folder: Path, where: str | None = None) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    where = where or str(folder)
    if not path.is_file():
        raise PublishError(f"{where}: no {MANIFEST}, so it is not a bundle",
                           fix="build bundles with `aipc bundle BACKEND VARIANT` (or `dvc repro`); "
                               "they are under artifacts/bundles/")
    try:
        data = read_json(path)
    except ValueError as err:
        raise PublishError(f"{where}/{MANIFEST}: not valid JSON ({err})",
                           fix="rebuild the bundle with `aipc bundle` (never edit a bundle by hand)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("files"), dict):
        raise PublishError(f"{where}/{MANIFEST}: not an {SCHEMA} manifest", fix=Manifest.FIX)
    try:
        Manifest.model_validate(data)
    except ValidationError as err:
        raise PublishError(f"{where}/{MANIFEST}: not a valid {SCHEMA} manifest: {first_problem(err)}",
                           fix=Manifest.FIX) from None
    return data


def manifest_json(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as written: checked against :class:`~pipeline.records.Manifest` (unknown keys and wrong
    types refused), in its JSON form."""
    return Manifest.model_validate(manifest).dump()


def check_files(folder: Path, manifest: dict[str, Any], where: str, *, allow_extra: tuple[str, ...] = (),
                fix: str) -> dict[str, dict[str, Any]]:
    """Every file listed with its sha256 and size, nothing else; raise PublishError naming each mismatch."""
    actual = file_table(folder, exclude=(MANIFEST, *allow_extra))
    listed = manifest["files"]
    problems = []
    for name in sorted(set(listed) | set(actual)):
        want, got = listed.get(name), actual.get(name)
        if got is None:
            problems.append(f"{name}: listed in {MANIFEST} but missing")
        elif want is None:
            problems.append(f"{name}: present but not listed in {MANIFEST}")
        elif got["sha256"] != want.get("sha256") or got["size"] != want.get("size"):
            problems.append(f"{name}: sha256 {got['sha256'][:16]}… ({got['size']} bytes) does not match the "
                            f"manifest's {str(want.get('sha256'))[:16]}… ({want.get('size')} bytes)")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise PublishError(f"{where} does not match its {MANIFEST}:\n  " + "\n  ".join(shown), fix=fix)
    return actual
