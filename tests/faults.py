"""The bad-input / fault catalogue: one entry per fault, each proven by the named test.

``docs/faults.md`` is generated from this list (``python tests/faults.py --write``) and
tests/test_faults.py checks that it is current, that every named test exists and asserts its entry
through :func:`assert_refused`, so the table can't drift from what the tests prove.

Every entry means: the command exits with ``exit_code`` (non-zero), prints one ``aipc: error:``
message holding ``message`` and an ``aipc: fix:`` line holding ``fix``, no traceback, leaves no
partial artifact, and the same command succeeds after the fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "faults.md"


@dataclass(frozen=True)
class Fault:
    id: str
    category: str
    fault: str
    command: str
    exit_code: int
    message: str  # a fragment of the `aipc: error:` line(s)
    fix: str  # a fragment of the `aipc: fix:` line (or, for DVC's own refusals, of its message)
    test: str  # tests/<file>::<test>[<param>]


CATALOGUE = [
    # params.yaml ----------------------------------------------------------------------------------
    Fault("params-unknown-key", "params.yaml", "unknown key (a typo: `grup_size`)", "aipc check", 2,
          "unknown key 'openvino.variants.int4.grup_size'", "edit the named keys",
          "tests/test_faults.py::test_bad_params[params-unknown-key]"),
    Fault("params-wrong-type", "params.yaml", "wrong type (`ratio: high`)", "aipc check", 2,
          "'openvino.variants.int4.ratio' = 'high'", "edit the named keys",
          "tests/test_faults.py::test_bad_params[params-wrong-type]"),
    Fault("params-out-of-range", "params.yaml", "value out of range (`ratio: 1.7`)", "aipc check", 2,
          "'openvino.variants.int4.ratio' = 1.7: Input should be less than or equal to 1",
          "edit the named keys", "tests/test_faults.py::test_bad_params[params-out-of-range]"),
    Fault("params-group-size", "params.yaml", "INT4 group size not dividing the hidden size (100 vs 576)",
          "aipc check", 2, "group_size = 100 does not divide the model's hidden_size 576",
          "choose a group size dividing 576, 1536", "tests/test_faults.py::test_bad_params[params-group-size]"),
    Fault("params-group-size-model", "params.yaml", "group size not dividing a downloaded model's width "
          "(checked against its config.json before loading)", "aipc export openvino int4", 2,
          "group_size = 100 does not divide the model's hidden_size 192", "choose a group size dividing 192",
          "tests/test_faults.py::test_group_size_checked_against_the_downloaded_model"),
    Fault("params-npu-asym", "params.yaml", "asymmetric INT4 for the NPU IR (`sym: false`)", "aipc check", 2,
          "sym: false is refused for an NPU variant", "edit the named keys",
          "tests/test_faults.py::test_bad_params[params-npu-asym]"),
    Fault("params-gate-range", "params.yaml", "gate threshold out of range (`min_top1_agreement: 1.5`)",
          "aipc check", 2, "'validation.gates.default.min_top1_agreement' = 1.5", "edit the named keys",
          "tests/test_faults.py::test_bad_params[params-gate-range]"),
    # model ----------------------------------------------------------------------------------------
    Fault("model-missing-tokenizer", "model", "tokenizer files missing", "aipc download", 3,
          "no tokenizer (neither tokenizer.json nor tokenizer.model)", "must include its tokenizer files",
          "tests/test_faults.py::test_bad_model[model-missing-tokenizer]"),
    Fault("model-missing-architecture", "model", "config.json without `architectures` / `model_type`",
          "aipc download", 3, "model_type None, architectures [] is not a Phi-3 checkpoint",
          "Phi-3 family model", "tests/test_faults.py::test_bad_model[model-missing-architecture]"),
    Fault("model-not-phi3", "model", "another architecture (Llama)", "aipc download", 3,
          "model_type 'llama', architectures ['LlamaForCausalLM'] is not a Phi-3 checkpoint",
          "Phi-3 family model", "tests/test_faults.py::test_bad_model[model-not-phi3]"),
    Fault("model-bin-only", "model", "`.bin`-only (pickled) weights", "aipc download", 3,
          "only pickled weights: pytorch_model.bin", "pickled .bin weights are refused",
          "tests/test_faults.py::test_bad_model[model-bin-only]"),
    Fault("model-truncated", "model", "a truncated safetensors file", "aipc download", 3,
          "truncated or padded", "delete it and download again",
          "tests/test_faults.py::test_bad_model[model-truncated]"),
    Fault("model-sha256", "model", "a safetensors file whose sha256 differs from the Hub's (corrupt cache)",
          "aipc download", 3, "differs from the Hub's", "download",
          "tests/test_download.py::test_corrupt_cached_blob_is_refused"),
    # environment ----------------------------------------------------------------------------------
    Fault("env-hub-unreachable", "environment", "Hub unreachable", "aipc download", 4,
          "cannot reach the Hugging Face Hub", "HF_ENDPOINT",
          "tests/test_download.py::test_unreachable_hub_is_one_clear_error"),
    Fault("env-bad-token", "environment", "bad token", "aipc download", 4, "refused the token", "HF_TOKEN",
          "tests/test_download.py::test_hub_errors_are_clear[bad_token]"),
    Fault("env-gated", "environment", "gated repo without access", "aipc download", 4, "is gated",
          "accept the model's terms", "tests/test_download.py::test_hub_errors_are_clear[gated]"),
    Fault("env-disk-full", "environment", "disk full during export (a 2 MiB file-size limit)",
          "aipc export ortgenai cpu-int4", 7, "the disk filled up while writing it", "free disk space",
          "tests/test_faults.py::test_disk_full_during_export"),
    Fault("env-oom-preflight", "environment", "out of memory, predicted by the RAM preflight",
          "aipc export ortgenai dml-fp16", 7, "needs an estimated", "AIPC_SKIP_MEMORY_CHECK=1",
          "tests/test_faults.py::test_memory_preflight_refuses_then_override_runs"),
    Fault("env-npu-missing", "environment", "NPU-library environment missing", "aipc export npu int4", 7,
          "the NPU environment", "envs/npu/setup.sh", "tests/test_npu.py::test_missing_env_through_the_cli"),
    # process --------------------------------------------------------------------------------------
    Fault("proc-sigkill", "process", "a stage killed with SIGKILL halfway (`dvc repro`)", "dvc repro", -9,
          "(killed: no message)", "rerun `dvc repro`: the half-written temp dir is never an output and is swept",
          "tests/test_faults.py::test_sigkill_halfway_then_rerun_completes"),
    Fault("proc-concurrent-repro", "process", "two `dvc repro` at once in one workspace (DVC's own lock)",
          "dvc repro", 255, "is busy, it is being blocked by", "If there are no processes with such PIDs",
          "tests/test_faults.py::test_two_repros_at_once"),
    Fault("proc-repro-unknown-target", "process", "`aipc repro` of a stage dvc.yaml does not have", "aipc repro nope", 2,
          "cannot plan the stages of nope", "name stages as `dvc repro` does",
          "tests/test_repro.py::test_a_target_dvc_does_not_know_is_a_config_error"),
    Fault("proc-repro-stage-fails", "process", "a stage fails under `aipc repro -j 2` while another runs beside it",
          "aipc repro", 9, "stage failed: b", "the stages that finished are not run again",
          "tests/test_repro.py::test_a_failure_starts_nothing_new_lets_the_running_finish_and_names_the_stage"),
]
BY_ID = {f.id: f for f in CATALOGUE}


def assert_refused(result, fault_id: str, *, stderr: str | None = None) -> None:
    """``result`` (a CompletedProcess of an `aipc` command) failed as catalogue entry ``fault_id`` says."""
    f = BY_ID[fault_id]
    err = result.stderr if stderr is None else stderr
    assert result.returncode == f.exit_code, (fault_id, result.returncode, err[-3000:])
    assert f.message in err, (fault_id, err[-3000:])
    assert "Traceback" not in err, (fault_id, err[-3000:])
    if f.command.startswith("aipc"):
        fix_lines = [ln for ln in err.splitlines() if ln.startswith("aipc: fix:")]
        assert len([ln for ln in err.splitlines() if ln.startswith("aipc: error:")]) == 1, err[-3000:]
        assert fix_lines and f.fix in " ".join(fix_lines), (fault_id, err[-3000:])
    else:
        assert f.fix in err, (fault_id, err[-3000:])


def render() -> str:
    rows = ["# Bad input and faults: the catalogue", "",
            "Generated from `tests/faults.py` by `python tests/faults.py --write`; `tests/test_faults.py` fails",
            "when this file is stale or an entry's test is missing. Every entry is a passing test: the command",
            "exits with the code shown, prints one `aipc: error:` message holding the text shown and an",
            "`aipc: fix:` line, no traceback, leaves no partial artifact, and succeeds again after the fix.",
            "Exit codes: 2 params, 3 model source, 4 Hub, 5 export, 6 validation, 7 environment, 8 publish, "
            "9 stages of `aipc repro`, 10 a record on disk (export record, manifest, metrics) that is not what its "
            "stage writes.", ""]
    for cat in dict.fromkeys(f.category for f in CATALOGUE):
        rows += [f"## {cat}", "", "| fault | command | exit | message (excerpt) | fix (excerpt) | test |",
                 "|---|---|---|---|---|---|"]
        for f in (x for x in CATALOGUE if x.category == cat):
            exit_code = "SIGKILL" if f.exit_code == -9 else str(f.exit_code)
            message, fix = (x.replace("|", "\\|") for x in (f.message, f.fix))
            rows.append(f"| {f.fault} | `{f.command}` | {exit_code} | {message} | {fix} | `{f.test}` |")
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
