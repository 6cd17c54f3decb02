"""The stage's node-by-node int4 quantization (pipeline.export.ortgenai_stream) writes exactly what
the ORT GenAI builder writes as-is: every output file byte for byte (model.onnx, model.onnx.data,
genai_config.json, tokenizer files), for untied and tied (Phi-4-mini-style, embedded) models,
symmetric and asymmetric, fp16 and fp32 I/O, the tied GatherBlockQuantized embedding, RTN."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.export.ortgenai import run_builder

RELEASE_INT4 = {"block_size": "32", "accuracy_level": "4", "is_symmetric": "true"}


def _build_both(tmp_path: Path, src: Path, precision: str, ep: str, extra: dict[str, str]):
    a, b = tmp_path / "as-is", tmp_path / "streamed"
    ra = run_builder(src, a, precision, ep, extra, streamed=False)
    rb = run_builder(src, b, precision, ep, extra, streamed=True)
    return a, b, ra, rb


def _count(folder: Path, op_type: str) -> int:
    import onnx

    return sum(n.op_type == op_type for n in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node)


def _assert_same_files(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert Path("model.onnx") in files_a and Path("model.onnx.data") in files_a
    for rel in files_a:
        if (a / rel).read_bytes() != (b / rel).read_bytes():
            _explain(a, b, rel)
            pytest.fail(f"{rel} differs between the builder as-is and the streamed build")


def _explain(a: Path, b: Path, rel: Path) -> None:
    """On a mismatch, say where (graph, node, initializer) before failing."""
    if rel.name not in ("model.onnx", "model.onnx.data"):
        return
    import onnx
    from onnx import numpy_helper

    ma, mb = (onnx.load(str(d / "model.onnx")) for d in (a, b))
    print("opset", ma.opset_import, mb.opset_import, "ir", ma.ir_version, mb.ir_version)
    na, nb = list(ma.graph.node), list(mb.graph.node)
    print("nodes", len(na), len(nb))
    for x, y in zip(na, nb):
        if x != y:
            print("first differing node:\n", x, "\n---\n", y)
            break
    ia = [(t.name, numpy_helper.to_array(t).tobytes()) for t in ma.graph.initializer]
    ib = [(t.name, numpy_helper.to_array(t).tobytes()) for t in mb.graph.initializer]
    print("initializers", len(ia), len(ib))
    for x, y in zip(ia, ib):
        if x != y:
            print("first differing initializer:", x[0], y[0], x[1] == y[1])
            break


@pytest.mark.slow
@pytest.mark.parametrize("precision,ep,extra", [
    ("int4", "dml", RELEASE_INT4),
    ("int4", "cpu", {"block_size": "64", "accuracy_level": "1", "is_symmetric": "false"}),
    ("int4", "cpu", {**RELEASE_INT4, "algo_config": "rtn"}),
    ("fp16", "dml", {}),
], ids=["dml-int4", "cpu-int4-asym", "cpu-int4-rtn", "dml-fp16"])
def test_streamed_equals_builder_untied(tmp_path, tiny_phi3, precision, ep, extra):
    a, b, ra, rb = _build_both(tmp_path, tiny_phi3, precision, ep, extra)
    if "algo_config" in extra:  # RTN re-sorts the whole graph: the builder's own path
        assert rb["mode"] == "whole-graph"
    elif precision == "int4":
        assert rb["mode"] == "streamed" and rb["nodes"] == _count(a, "MatMulNBits") >= 2 * 4 + 1
    else:
        assert rb["mode"] == "none"
    _assert_same_files(a, b)


@pytest.fixture(scope="module")
def tiny_phi4(tmp_path_factory, embedded_dir):
    try:
        from .tiny import make_tiny_phi3
    except ImportError:
        from tiny import make_tiny_phi3
    import json

    src = make_tiny_phi3(tmp_path_factory.mktemp("tiny4") / "phi4-mini", embedded_dir, name="Phi-4-mini-instruct")
    assert json.loads((src / "config.json").read_text())["tie_word_embeddings"] is True
    return src


@pytest.mark.slow
@pytest.mark.parametrize("extra", [RELEASE_INT4, {**RELEASE_INT4, "shared_embeddings": "true"}],
                         ids=["tied", "tied-shared-embeddings"])
def test_streamed_equals_builder_tied(tmp_path, tiny_phi4, extra):
    a, b, ra, rb = _build_both(tmp_path, tiny_phi4, "int4", "dml", extra)
    assert rb["mode"] == "streamed"
    _assert_same_files(a, b)
    if extra.get("shared_embeddings") == "true":  # the embedding reads the quantized lm_head
        import onnx

        ops = {n.op_type for n in onnx.load(str(b / "model.onnx"), load_external_data=False).graph.node}
        assert "GatherBlockQuantized" in ops


@pytest.mark.slow
def test_streamed_equals_builder_on_the_embedded_model(tmp_path, embedded_dir):
    a, b, ra, rb = _build_both(tmp_path, embedded_dir, "int4", "dml", RELEASE_INT4)
    assert rb["mode"] == "streamed" and rb["nodes"] == _count(a, "MatMulNBits") >= 30 * 4 + 1
    _assert_same_files(a, b)


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile")


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists(), reason="Linux only")
def test_released_weights_give_their_file_pages_back_and_keep_their_values(tmp_path):
    """A weight read from a private file mapping (as safetensors maps a checkpoint) is dropped from
    the resident set after release and reads back the same; a page written in memory is kept."""
    import numpy as np
    import torch

    from pipeline.export.ortgenai_stream import _drop_file_pages

    rows, cols = 4096, 2048  # 32 MiB of fp32
    data = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    path = tmp_path / "w.bin"
    data.tofile(path)
    t = torch.from_file(str(path), shared=False, size=rows * cols, dtype=torch.float32).view(rows, cols)
    before = _rss_file_kib()
    assert float(t.sum()) == pytest.approx(float(data.sum()), rel=1e-4)  # read every page
    touched = _rss_file_kib()
    assert touched - before > 24 * 1024
    _drop_file_pages(t.T)  # the builder holds transposed views
    assert touched - _rss_file_kib() > 24 * 1024
    assert torch.equal(t, torch.from_numpy(data))  # faulted back in from the file

    t[0, 0] = 123.0  # a copied-on-write page: its content is not the file's any more
    _drop_file_pages(t)
    assert float(t[0, 0]) == 123.0
