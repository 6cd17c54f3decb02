"""The records the pipeline writes to disk, as typed models: the export record every artifact carries
(``aipc_export.json``), the bundle manifest (``manifest.json``), and the smoke, validate and cost metrics.

Each is a pydantic model that refuses unknown keys and wrong types, both when a stage writes it
(:meth:`Record.write`) and when a later stage or ``aipc publish`` / ``aipc verify`` reads it
(:meth:`Record.read`, a :class:`~pipeline.errors.RecordError` naming the file, the key and the fix). The
JSON is what the dict-built records were, byte for byte (same keys, same order, same number types, keys
that were only written when they applied are still only written then): the md5 of every output in
dvc.lock is unchanged by the models (tests/test_records.py reads every record of an end-to-end run back
and writes it again to the same bytes).

Schema versions: the manifest carries its own (``"schema": "aipc-bundle/1"``). The other records were
written without one; they are version 1 (``SCHEMA``), and a future format change adds a ``schema`` key
to the new version's files, so a file without one is known to be version 1.

Free-form parts stay ``dict``: what is read back from a model file (``effective``), a params.yaml
section's own dump (``params``, typed by :mod:`pipeline.config`), the toolchain's versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RecordError
from .fsutil import read_json, write_json

EXPORT_JSON = "aipc_export.json"  # every artifact's export record
Number = int | float  # kept as written: a float field would turn a recorded 0 into 0.0 (other bytes)
Json = dict[str, Any]


class Record(BaseModel):
    """A record file: strict keys, the JSON of the dict it replaces."""

    model_config = ConfigDict(extra="forbid", strict=True)
    SCHEMA: ClassVar[str] = "1"
    WHAT: ClassVar[str] = "record"  # for messages: which stage writes it
    FIX: ClassVar[str] = "re-run the stage that writes it (`dvc repro`)"

    def dump(self) -> Json:
        """The JSON object: every field in declaration order, optional ones only when they were given."""
        return self.model_dump(mode="json", exclude_unset=True)

    def write(self, path: Path) -> None:
        write_json(path, self.dump())

    @classmethod
    def check(cls, data: Any, where: str):
        """``data`` as this record, or :class:`RecordError` naming ``where``, the key and the fix."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise RecordError(f"{where}: not a valid {cls.WHAT}: {first_problem(err)}", fix=cls.FIX) from None

    @classmethod
    def load_json(cls, path: Path) -> Any:
        """The file's JSON, or :class:`RecordError` naming it and this record's fix."""
        try:
            return read_json(path)
        except ValueError as err:
            raise RecordError(f"{path}: not valid JSON ({err})", fix=cls.FIX) from None

    @classmethod
    def read(cls, path: Path):
        return cls.check(cls.load_json(Path(path)), str(path))


def first_problem(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {e['msg']}{more}"


class _Part(BaseModel):
    """A part of a record: strict like the record."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- export records


class ExportRecord(Record):
    """``aipc_export.json``: fields every backend writes first."""

    WHAT: ClassVar[str] = "export record (aipc_export.json)"
    FIX: ClassVar[str] = "re-export the artifact: `dvc repro` (or `aipc export BACKEND VARIANT`)"

    backend: str
    variant: str


class OpenVINOBaseRecord(ExportRecord):
    """The uncompressed base IR every compressed OpenVINO variant starts from."""

    backend: Literal["openvino"]
    variant: Literal["base"]
    source_dtype: str | None
    effective: Json
    toolchain: dict[str, str]


class OpenVINOExportRecord(ExportRecord):
    backend: Literal["openvino"]
    params: Json
    algorithm: str
    from_base: bool
    calibration: Json | None
    effective: Json
    npu_blob: Json | None = None  # NPU-targeted variants only
    toolchain: dict[str, str]


class OrtGenAIExportRecord(ExportRecord):
    backend: Literal["ortgenai"]
    params: Json
    algorithm: str
    calibration: None
    builder_extra_options: Json
    effective: Json
    tokenizer: Json
    genai_config_dropped_defaults: list[str]
    unquantized_graph: Literal["disk", "memory"] | None
    min_runtime: dict[str, str]
    toolchain: dict[str, str]


class NPUCompile(_Part):
    call: str
    quantization: str | None
    lm_head_untied: bool
    linear_types: list[str]
    packing: str | None


class FileEntry(_Part):
    sha256: str
    size: int


class NPUExportRecord(ExportRecord):
    backend: Literal["npu"]
    params: Json
    library: dict[str, str]
    runtime: dict[str, str]
    runtime_must_match: list[str]
    format: str
    pickle: bool
    warning: str
    loader: str
    model_file: str
    compile: NPUCompile
    device: str
    files: dict[str, FileEntry]
    toolchain: dict[str, str]
    device_fallback: str | None = None  # only when the compile fell back from the NPU (the device used)


EXPORT_RECORDS: dict[str, tuple[type[ExportRecord], ...]] = {
    "openvino": (OpenVINOExportRecord, OpenVINOBaseRecord),
    "ortgenai": (OrtGenAIExportRecord,),
    "npu": (NPUExportRecord,),
}


def read_export_record(path: Path) -> ExportRecord:
    """An artifact's ``aipc_export.json`` as the model of the backend it names."""
    data = ExportRecord.load_json(Path(path))
    backend = data.get("backend") if isinstance(data, dict) else None
    models = EXPORT_RECORDS.get(backend) if isinstance(backend, str) else None
    if not models:
        raise RecordError(f"{path}: backend {backend!r} is not one of {', '.join(EXPORT_RECORDS)}", fix=ExportRecord.FIX)
    if len(models) > 1 and data.get("variant") == "base":
        models = models[1:]
    return models[0].check(data, str(path))


# --------------------------------------------------------------------------- metrics


class SmokeResult(_Part):
    id: str
    messages: list[dict[str, str]]
    text: str
    new_tokens: int
    token_ids: list[int]
    stopped_by: str | None
    repeated_4gram_ratio: Number
    first_token_s: Number
    tokens_per_s: Number | None
    failures: list[str]
    passed: bool
    notes: list[str]


class SmokeRecord(Record):
    """``metrics/smoke/<backend>-<variant>.json``."""

    WHAT: ClassVar[str] = "smoke record"
    FIX: ClassVar[str] = "re-run the smoke stage: `dvc repro smoke-BACKEND@VARIANT`"

    backend: str
    artifact: str
    passed: bool
    prompts_passed: int
    prompts_total: int
    max_new_tokens: int
    runtime: Json
    results: list[SmokeResult]
    must_pass: bool


class GateResult(_Part):
    gate: str
    metric: str
    op: str
    threshold: Any
    value: Any
    passed: bool


class SmokeVerdict(_Part):
    passed: bool
    prefix_agreement: Number | None
    file: str


class ValidateRecord(Record):
    """``metrics/validate/<backend>-<variant>.json``."""

    WHAT: ClassVar[str] = "validate record"
    FIX: ClassVar[str] = "re-run the validate stage: `dvc repro validate-BACKEND@VARIANT`"

    backend: str
    variant: str
    artifact: str
    protocol: Json
    texts: dict[str, dict[str, str]]
    accuracy: Json
    tokenizer_parity: Json
    long_context: Json | None = None  # only where a gate reads the long window
    smoke: SmokeVerdict
    gates: list[GateResult]
    passed: bool


class Machine(_Part):
    cpus: int | None
    mem_total_gib: Number | None


class CostRecord(Record):
    """``metrics/cost/<stage>.json``: what one stage cost."""

    WHAT: ClassVar[str] = "cost record"

    stage: str
    wall_s: Number
    cpu_s: Number
    peak_rss_mib: Number
    peak_rss_self_mib: Number
    peak_rss_children_mib: Number
    machine: Machine
    process: Literal["worker-fork", "fresh"]


# --------------------------------------------------------------------------- the bundle manifest


class SourceFacts(_Part):
    """What the bundle was built from (no machine paths); hub sources name the commit."""

    kind: str | None
    name: str | None
    files: dict[str, Json]
    repo_id: str | None = None  # hub
    revision: str | None = None  # hub
    commit: str | None = None  # hub
    pinned: bool | None = None  # hub
    provenance: Json | None = None  # embedded
    ref: str
    weights_sha256: str
    base_model: str | None
    license: str | None
    license_from: str
    license_files: list[str]


class Quantization(_Part):
    params: Json
    effective: Json
    algorithm: str
    calibration: Json | None
    builder_extra_options: Json | None = None  # ONNX Runtime GenAI


class FailedPrompt(_Part):
    id: str | None
    failures: list[str]


class SmokeExample(_Part):
    id: str | None
    messages: list[dict[str, str]]
    text: str | None


class SmokeSummary(_Part):
    passed: bool
    prompts_passed: int
    prompts_total: int
    failed: list[FailedPrompt]
    notes: list[str]
    runtime: dict[str, str]
    max_new_tokens: int | None = None
    example: SmokeExample | None = None


class ValidateSummary(_Part):
    passed: bool
    gates: list[GateResult] | None = None
    accuracy: Json | None = None
    tokenizer_parity: Json | None = None
    smoke: SmokeVerdict | None = None
    texts: dict[str, dict[str, str]] | None = None


class ValidationFacts(_Part):
    smoke: SmokeSummary | None = None
    validate_: ValidateSummary | None = Field(default=None, alias="validate")  # BaseModel.validate is taken

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, serialize_by_alias=True)


class BuildFacts(_Part):
    code_commit: str | None
    dvc_stage: str | None = None
    dvc_out: str | None = None
    dvc_md5: str | None = None


class SignatureFacts(_Part):
    file: str
    public_key: str
    fingerprint: str
    key: Literal["release", "development"]
    format: str
    tools: dict[str, str]


class Manifest(Record):
    """``manifest.json``: a bundle's identity, provenance, validation verdicts and every file's sha256."""

    WHAT: ClassVar[str] = "bundle manifest (manifest.json)"
    FIX: ClassVar[str] = "rebuild the bundle with this version of aipc (`aipc bundle BACKEND VARIANT`)"
    SCHEMA: ClassVar[str] = "aipc-bundle/1"

    schema_: Literal["aipc-bundle/1"] = Field(alias="schema")
    name: str
    model: str
    backend: str
    variant: str
    repo_id: str
    library_name: str
    source: SourceFacts
    quantization: Quantization
    toolchain: dict[str, str]
    min_runtime: dict[str, str]
    min_runtime_basis: str
    runtime_exact: bool
    validation: ValidationFacts
    runtime_env: dict[str, str] | None = None  # the NPU environment that wrote the artifact
    loader: str | None = None  # the NPU artifact's loader module
    device_fallback: str | None = None
    build: BuildFacts | None = None
    signature: SignatureFacts | None = None
    files: dict[str, FileEntry] = {}
    pickle_files: list[str] = []

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, serialize_by_alias=True)
