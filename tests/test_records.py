"""The typed records (pipeline/records.py): what they refuse, what they keep as written, and that every record
of a real end-to-end run reads back through its model and writes again to the very same bytes."""

from __future__ import annotations

import json

import pytest

from aipc.pipeline.errors import RecordError
from aipc.pipeline.fsutil import dump_json
from aipc.pipeline.records import (
    EXPORT_JSON,
    CostRecord,
    Manifest,
    NPUExportRecord,
    OpenVINOBaseRecord,
    OpenVINOExportRecord,
    OrtGenAIExportRecord,
    SmokeRecord,
    ValidateRecord,
    read_export_record,
)

COST = {"stage": "export-openvino@int4", "wall_s": 12.5, "cpu_s": 20.01, "peak_rss_mib": 812, "peak_rss_self_mib": 700.5,
        "peak_rss_children_mib": 0, "machine": {"cpus": 2, "mem_total_gib": 23.4}, "process": "worker-fork"}


def test_numbers_keep_their_json_type(tmp_path):
    """An int stays an int and a float a float: a float-typed field would write a recorded 0 as 0.0, and the
    md5 DVC recorded for the file would change."""
    rec = CostRecord.model_validate(COST)
    rec.write(tmp_path / "c.json")
    assert (tmp_path / "c.json").read_text() == dump_json(COST)
    assert '"peak_rss_children_mib": 0,' in (tmp_path / "c.json").read_text()


def test_unknown_key_and_wrong_type_are_refused_naming_file_key_and_fix(tmp_path):
    path = tmp_path / "cost.json"
    path.write_text(json.dumps({**COST, "wall_seconds": 1}))
    with pytest.raises(RecordError) as err:
        CostRecord.read(path)
    assert str(path) in err.value.message and "wall_seconds" in err.value.message and err.value.fix
    path.write_text(json.dumps({**COST, "process": "thread"}))
    with pytest.raises(RecordError, match="process"):
        CostRecord.read(path)
    path.write_text(json.dumps({**COST, "peak_rss_mib": "812"}))  # strict: no coercion from text
    with pytest.raises(RecordError, match="peak_rss_mib"):
        CostRecord.read(path)
    path.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        CostRecord.read(path)
    assert RecordError.exit_code == 10


def test_optional_keys_are_written_only_when_given():
    base = {"backend": "openvino", "variant": "int4", "params": {"bits": 4}, "algorithm": "rtn", "from_base": True,
            "calibration": None, "effective": {}, "toolchain": {"openvino": "2026.4.1"}}
    assert "npu_blob" not in OpenVINOExportRecord.model_validate(base).dump()
    assert OpenVINOExportRecord.model_validate({**base, "npu_blob": None}).dump()["npu_blob"] is None
    assert OpenVINOExportRecord.model_validate(base).dump()["calibration"] is None  # given as null: kept


def test_export_record_is_read_as_its_backends_model(tmp_path):
    base = {"backend": "openvino", "variant": "base", "source_dtype": "bfloat16", "effective": {}, "toolchain": {}}
    (tmp_path / EXPORT_JSON).write_text(json.dumps(base))
    assert isinstance(read_export_record(tmp_path / EXPORT_JSON), OpenVINOBaseRecord)
    (tmp_path / EXPORT_JSON).write_text(json.dumps({**base, "backend": "tflite"}))
    with pytest.raises(RecordError, match="'tflite' is not one of openvino, ortgenai, npu"):
        read_export_record(tmp_path / EXPORT_JSON)
    (tmp_path / EXPORT_JSON).write_text(json.dumps({**base, "variant": "int4"}))  # a variant lacks its keys
    with pytest.raises(RecordError, match="params"):
        read_export_record(tmp_path / EXPORT_JSON)


def test_manifest_schema_key_and_validate_section_keep_their_names():
    m = {"schema": "aipc-bundle/1", "name": "openvino-int4", "model": "m", "backend": "openvino", "variant": "int4",
         "repo_id": "o/m", "library_name": "openvino",
         "source": {"kind": "local", "name": None, "files": {}, "ref": "r", "weights_sha256": "0" * 64, "base_model": None,
                    "license": None, "license_from": "unknown", "license_files": []},
         "quantization": {"params": {}, "effective": {}, "algorithm": "rtn", "calibration": None},
         "toolchain": {}, "min_runtime": {}, "min_runtime_basis": "b", "runtime_exact": False,
         "validation": {"validate": {"passed": True}}, "files": {"a": {"sha256": "1" * 64, "size": 3}},
         "pickle_files": []}
    assert Manifest.model_validate(m).dump() == m
    with pytest.raises(ValueError, match="schema"):
        Manifest.model_validate({**m, "schema": "aipc-bundle/2"})


@pytest.mark.slow
def test_every_record_of_a_run_reads_back_and_writes_the_same_bytes(repro_workspace):
    """Each export record, manifest, smoke/validate/cost record the end-to-end `dvc repro` wrote is valid for
    its model, and the model writes it back byte for byte: the records are the dict-built ones, unchanged."""
    ws, r, _ = repro_workspace
    assert r.returncode == 0
    seen: dict[type, int] = {}
    groups = [(p, None) for p in sorted((ws / "artifacts").glob("**/" + EXPORT_JSON)) if "bundles" not in p.parts]
    groups += [(p, Manifest) for p in sorted((ws / "artifacts" / "bundles").glob("*/manifest.json"))]
    for folder, model in (("smoke", SmokeRecord), ("validate", ValidateRecord), ("cost", CostRecord)):
        groups += [(p, model) for p in sorted((ws / "metrics" / folder).glob("*.json"))]
    for path, model in groups:
        rec = read_export_record(path) if model is None else model.read(path)
        seen[type(rec)] = seen.get(type(rec), 0) + 1
        assert dump_json(rec.dump()) == path.read_text(encoding="utf-8"), path
    assert {OpenVINOBaseRecord, OpenVINOExportRecord, OrtGenAIExportRecord, NPUExportRecord, Manifest, SmokeRecord,
            ValidateRecord, CostRecord} <= set(seen), seen
    assert seen[Manifest] >= 7 and seen[CostRecord] > 20, seen


@pytest.mark.slow
def test_a_hand_edited_smoke_record_stops_the_bundle_naming_file_and_key(repro_workspace, tmp_path):
    """A record on disk that is not what its stage writes is refused where it is read (one RecordError naming
    the file and the key: the CLI prints it as one message, exit code 10), before any bundle file is written."""
    from aipc.pipeline.config import load_params
    from aipc.pipeline.package import build_bundle

    ws, _, _ = repro_workspace
    smoke = ws / "metrics" / "smoke" / "openvino-int4.json"
    bad = tmp_path / "smoke.json"
    bad.write_text(json.dumps({**json.loads(smoke.read_text()), "passed": "yes"}))
    with pytest.raises(RecordError) as err:
        build_bundle(load_params(ws / "params.yaml"), "openvino", "int4", ws, smoke_metrics=bad,
                     out_dir=tmp_path / "bundle")
    assert err.value.message.startswith(f"{bad}: not a valid smoke record: passed"), err.value.message
    assert "dvc repro smoke-" in err.value.fix
    assert not (tmp_path / "bundle").exists()
