"""Export once, compress many: every OpenVINO variant compressed from the one base IR equals what
``optimum-cli export openvino`` writes for the same settings (which traces the model once per run).

Weights (``openvino_model.bin``), tokenizer IRs and JSON files byte for byte; the model XML up to
OpenVINO's per-process node counters (``Constant_14587``); and the same logits, exactly.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from aipc.pipeline.config import deep_merge, parse_params
from aipc.pipeline.fsutil import sha256_file

try:
    from .tiny import make_tiny_phi3
except ImportError:
    from tiny import make_tiny_phi3

ROOT = Path(__file__).resolve().parent.parent
RELEASE = yaml.safe_load((ROOT / "params.yaml").read_text())
EMBEDDED = deep_merge(RELEASE, yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text()))
BIN = Path(sys.executable).parent

# our variant -> the optimum-cli flags of the same settings
CASES = {
    "int4-asym": ({"weight_format": "int4", "group_size": 16, "ratio": 0.8, "sym": False},
                  ["--weight-format", "int4", "--group-size", "16", "--ratio", "0.8"]),
    "npu-int4": ({"weight_format": "int4", "group_size": -1, "ratio": 1.0, "sym": True, "target_device": "npu"},
                 ["--weight-format", "int4", "--group-size", "-1", "--ratio", "1.0", "--sym"]),
    "int8": ({"weight_format": "int8"}, ["--weight-format", "int8"]),
    "fp16": ({"weight_format": "fp16"}, ["--weight-format", "fp16"]),
}


def _xml(p: Path) -> str:
    """The IR XML without OpenVINO's per-process counters in node names (``Model3``, ``Constant_14587``)."""
    return re.sub(r"_\d+\b", "_N", re.sub(r'name="Model\d+"', 'name="Model"', p.read_text()))


def _logits(xml: Path) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})
    req = compiled.create_infer_request()
    ids = np.random.default_rng(0).integers(3, 49000, (1, 20))
    req.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(20)[None],
               "beam_idx": np.zeros(1, np.int32)})
    return req.get_tensor("logits").data.copy()


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def exports(request, tmp_path_factory, embedded_dir):
    """A tiny Phi-3 (bf16 as the Hub ships it, and fp32): ours from one base, optimum-cli once per variant."""
    from aipc.pipeline.export import openvino, run_base

    tmp = tmp_path_factory.mktemp(f"ov-{request.param}")
    src = make_tiny_phi3(tmp / "src", embedded_dir, dtype=request.param, heads=3, intermediate=320)
    data = copy.deepcopy(EMBEDDED)
    data["openvino"]["variants"] = {k: v for k, (v, _) in CASES.items()}
    params = parse_params(data)
    base = tmp / "base"
    run_base(params, src, base)
    ours = {k: openvino.export(params, k, src, tmp / "ours" / k, base_dir=base) for k in CASES}
    cli = ["optimum-cli", "export", "openvino", "--model", str(src), "--task", "text-generation-with-past"]
    argvs = [cli + flags + [str(tmp / "cli" / key)] for key, (_, flags) in CASES.items()]
    r = subprocess.run([sys.executable, "-c", _OPTIMUM_CLI_FORKS, json.dumps(argvs)], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.splitlines()[-1].split() == ["0"] * len(CASES), r.stdout[-2000:] + r.stderr[-3000:]  # exit codes
    return tmp, base, ours


# optimum-cli itself (its console script's main()), once per argv, each run in a fork of one process that
# imported the toolchain first: every run starts from the CLI's own fresh state as a new process would, but
# the ~10 s import is paid once per dtype instead of once per variant.
_OPTIMUM_CLI_FORKS = r"""
import json, os, sys
import torch, transformers, openvino, nncf, optimum.intel.openvino, optimum.exporters.openvino  # noqa: F401
from optimum.commands.optimum_cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        sys.argv = argv
        try:
            code = main() or 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else 1
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(" ".join(map(str, codes)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CASES))
def test_variant_from_the_base_equals_optimum_cli(exports, key):
    tmp, base, ours = exports
    mine, theirs = tmp / "ours" / key, tmp / "cli" / key
    files = sorted(p.name for p in theirs.iterdir() if p.is_file())
    assert sorted(p.name for p in mine.iterdir() if p.name != "aipc_export.json") == files
    for name in files:
        if name == "config.json":  # ours ships the source's byte for byte; optimum-cli writes transformers 5's rewrite
            assert (mine / name).read_bytes() == (tmp / "src" / name).read_bytes()
            continue
        if name == "openvino_model.xml" and key == "fp16":
            continue  # compress_to_fp16 marks a few more shape constants "keep f32": compared by logits below
        if name.endswith(".xml"):
            assert _xml(mine / name) == _xml(theirs / name), name
        else:
            assert sha256_file(mine / name) == sha256_file(theirs / name), name
    assert np.array_equal(_logits(mine / "openvino_model.xml"), _logits(theirs / "openvino_model.xml"))
    assert ours[key]["from_base"] is True
    # the artifact shares no inode with the base (DVC moves artifact files into its cache)
    for f in mine.iterdir():
        if (base / f.name).exists():
            assert f.stat().st_ino != (base / f.name).stat().st_ino, f.name


@pytest.mark.slow
def test_base_is_the_uncompressed_trace_in_the_source_dtype(exports):
    tmp, base, ours = exports
    rec = json.loads((base / "aipc_export.json").read_text())
    share = rec["effective"]["weight_share_by_type"]
    want = {"bfloat16": "bf16", "float32": "f32"}[rec["source_dtype"]]
    assert share.get(want, 0) > 0.99, share
    assert ours["int4-asym"]["effective"]["int4_group_sizes"] == {"16": sum(
        ours["int4-asym"]["effective"]["int4_group_sizes"].values())}


def test_variant_without_a_base_says_how_to_build_it(tmp_path, embedded_dir):
    from aipc.pipeline.errors import ExportError
    from aipc.pipeline.export import openvino

    params = parse_params(copy.deepcopy(EMBEDDED))
    with pytest.raises(ExportError) as err:
        openvino.export(params, "int4", embedded_dir, tmp_path / "out", base_dir=tmp_path / "nope")
    assert "no OpenVINO base IR" in str(err.value) and "aipc export openvino-base" in err.value.fix
    assert not (tmp_path / "out").exists()


def test_bf16_to_f16_is_torchs_cast_and_numpys_for_every_pattern():
    """fp16_from_base converts with torch's bf16 -> fp16 cast (the one optimum-cli's fp16 load applies):
    checked on all 65536 bf16 bit patterns against torch on a bfloat16 tensor, and against the
    exact-widen-then-round numpy path (equal bits except NaN payloads, which stay NaN)."""
    import torch

    from aipc.pipeline.export.openvino import bf16_bits_to_f16

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = bf16_bits_to_f16(bits)
    assert got.dtype == np.float16 and got.shape == bits.shape
    torch_cast = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(torch.float16).numpy()
    assert np.array_equal(got.view(np.uint16), torch_cast.view(np.uint16))
    with np.errstate(over="ignore"):
        widened = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float16)
    same = got.view(np.uint16) == widened.view(np.uint16)
    assert np.isnan(widened[~same]).all() and np.isnan(got[~same]).all() and same.sum() > 65000
    assert np.isinf(got[bits == 0x7F80]).all() and got[bits == 0x3F80][0] == 1.0  # +inf and 1.0 kept
    ro = bits.reshape(256, 256)
    ro.setflags(write=False)  # OpenVINO hands constants out read-only
    assert np.array_equal(bf16_bits_to_f16(ro).view(np.uint16), got.reshape(256, 256).view(np.uint16))
