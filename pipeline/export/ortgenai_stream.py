"""Run the ORT GenAI builder's own int4 quantization one weight at a time (peak memory).

The 0.18 builder registers every weight as an ``onnx_ir.LazyTensor`` (a cast of the torch
parameter, itself a view of the mmap'ed safetensors file), so building the graph costs almost
nothing. ``Model.to_nbits()`` then calls ``ir.to_proto(self.model)``: every weight of the model is
materialized at once as an fp16 ``TensorProto`` (one full copy of the model), the int4 weights are
added next to it, and the source pages all got read in the process. On Phi-3-mini that is ~17 GiB.

:func:`streamed_quantization` wraps ``to_nbits`` for the duration of one build: each quantizable
node (``MatMul`` / ``Gather`` with a constant weight) is cut out as a one-node model, handed to the
builder's **unchanged** ``to_nbits`` (same ``MatMulNBitsQuantizer``, same options: bits,
block_size, symmetry, accuracy level, algo config, QDQ/QOperator, exclusions), and the quantized
nodes and initializers are spliced back in place of the float ones, which are then released. The
result is the model ``to_nbits`` would return for the whole graph: the same nodes in the same
order, the same initializers in the same order (the quantizer appends its outputs at the end in
node order and drops the now-unused float weights), the same opset imports and IR version
(tests/test_ortgenai_stream.py compares both builds initializer by initializer).

After each weight is quantized the pages of the source file it was read from are returned to the
kernel (``madvise(MADV_DONTNEED)`` on the clean, private, read-only-used file mapping; a later read
faults them back in from the file), so resident memory stays at the quantized model plus one weight
instead of growing with every page of the checkpoint that was read.

Builds the per-node pass cannot reproduce exactly use the builder's own whole-graph path: the RTN /
k_quant algorithms (onnxruntime's ``rtn_quantize`` re-sorts the whole graph: identical tensors, but
another node order), exact per-node quantization overrides (checked against the whole graph) and
CUDA weight prepacking. The release variants use the default (MLAS) quantizer and are streamed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def _builder_model_class() -> Any:
    # builder.py imports its package as top-level "builders" (onnxruntime_genai/models is put on
    # sys.path), so the class create_model instantiates is builders.base.Model.
    from onnxruntime_genai.models import builder  # noqa: F401  (sets up sys.path and imports)

    return sys.modules["builders.base"].Model


@contextlib.contextmanager
def streamed_quantization() -> Iterator[dict[str, Any]]:
    """Within the block, every builder ``Model.to_nbits()`` quantizes node by node.

    Yields a dict filled with what happened (``mode``: "streamed" or "whole-graph", ``nodes``).
    """
    model_cls = _builder_model_class()
    original = model_cls.to_nbits
    stats: dict[str, Any] = {"mode": None, "nodes": 0}

    def to_nbits(self):  # noqa: ANN001
        reason = _unsupported(self)
        if reason:
            log.info("ORT GenAI: whole-graph quantization (%s)", reason)
            stats["mode"] = "whole-graph"
            return original(self)
        stats["mode"] = "streamed"
        stats["nodes"] = _quantize_node_by_node(self, original)
        return self.model

    model_cls.to_nbits = to_nbits
    try:
        yield stats
    finally:
        model_cls.to_nbits = original


def _unsupported(builder_model: Any) -> str | None:
    if getattr(builder_model, "quantization_algo", "default") != "default":
        # RTN/k_quant (onnxruntime's rtn_quantize) append the quantized nodes at the end and
        # topologically re-sort the whole graph: same tensors node by node, another node order
        return f"algo {builder_model.quantization_algo!r} re-sorts the whole graph"
    if getattr(builder_model, "exact_quant_override_names", None):
        return "exact per-node quantization overrides are checked against the whole graph"
    if getattr(builder_model, "matmul_attrs", {}).get("weights_prepacked", 0) > 0:
        return "CUDA weight prepacking"
    if any(_has_subgraph(n) for n in builder_model.model.graph):
        return "the graph has subgraphs"
    return None


def _has_subgraph(node: Any) -> bool:
    import onnx_ir as ir

    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def _candidates(builder_model: Any) -> list[Any]:
    qa = builder_model.quant_attrs
    op_types = set(qa["op_types_to_quantize"])
    excluded = set(qa["nodes_to_exclude"])
    included = set(getattr(builder_model, "int4_customized_weight_config", {}) or {})
    return [n for n in builder_model.model.graph
            if (n.op_type in op_types or n.name in included) and n.name not in excluded
            and any(v is not None and v.is_initializer() for v in n.inputs)]


def _quantize_node_by_node(builder_model: Any, original_to_nbits: Any) -> int:
    import onnx_ir as ir

    main = builder_model.model
    graph = main.graph
    # inputs referenced by name only, e.g. the tied GatherBlockQuantized's "lm_head.MatMul.weight_Q4"
    # that exists once the lm_head is quantized
    dangling: dict[str, ir.Value] = {}
    for node in graph:
        for v in node.inputs:
            if v is not None and v.producer() is None and not v.is_initializer() and not v.is_graph_input():
                dangling.setdefault(v.name, v)

    nodes = _candidates(builder_model)
    for node in nodes:
        chunk = _one_node_model(main, node)
        builder_model.model = chunk
        try:
            quantized = original_to_nbits(builder_model)
        finally:
            builder_model.model = main
        _splice(main, node, quantized, dangling)

    # the quantizer's clean_initializers(): every initializer no node (or graph output) reads goes
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            _release(value)
            del graph.initializers[name]
    return len(nodes)


def _copy_value(v: Any, name: str | None = None) -> Any:
    import onnx_ir as ir

    return ir.Value(name=name if name is not None else v.name, type=v.type, shape=v.shape)


def _copy_attrs(node: Any) -> list[Any]:
    import onnx_ir as ir

    return [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]


def _one_node_model(main: Any, node: Any) -> Any:
    """A model holding ``node`` alone: its constant inputs as initializers (the same lazy tensors,
    not copies), its other inputs as graph inputs (with their types, which the quantizer reads)."""
    import onnx_ir as ir

    inputs, inits, new_inputs = [], [], []
    for v in node.inputs:
        if v is None:
            new_inputs.append(None)
            continue
        c = _copy_value(v)
        if v.is_initializer():
            c.const_value = v.const_value
            inits.append(c)
        else:
            inputs.append(c)
        new_inputs.append(c)
    outputs = [_copy_value(o) for o in node.outputs]
    n = ir.Node(node.domain, node.op_type, new_inputs, _copy_attrs(node), overload=node.overload,
                outputs=outputs, version=node.version, name=node.name, doc_string=node.doc_string,
                metadata_props=dict(node.metadata_props))
    g = ir.Graph(inputs, outputs, nodes=[n], initializers=inits, opset_imports=dict(main.opset_imports),
                 name=main.graph.name)
    return ir.Model(g, ir_version=main.ir_version, producer_name=main.producer_name,
                    producer_version=main.producer_version, domain=main.domain, model_version=main.model_version)


def _splice(main: Any, node: Any, quantized: Any, dangling: dict[str, Any]) -> None:
    """Put the quantized chunk's nodes in place of ``node``, its new initializers at the end."""
    import onnx_ir as ir

    graph = main.graph
    qg = quantized.graph
    if len(qg) == 1 and _same_node(next(iter(qg)), node):
        return  # the quantizer left it alone (e.g. a weight it does not handle)
    values: dict[str, ir.Value] = {v.name: v for v in node.inputs if v is not None}
    for name, qv in qg.initializers.items():
        if name in graph.initializers:
            raise RuntimeError(f"streamed quantization: initializer {name!r} already exists")
        v = _copy_value(qv)
        v.const_value = qv.const_value
        graph.register_initializer(v)
        values[name] = v
        if name in dangling:
            dangling.pop(name).replace_all_uses_with(v)
    finals = {o.name: o for o in node.outputs}
    new_nodes, replaced = [], []
    for qn in qg:
        ins = []
        for qv in qn.inputs:
            if qv is None:
                ins.append(None)
            elif qv.name in values:
                ins.append(values[qv.name])
            else:
                raise RuntimeError(f"streamed quantization: {qn.name!r} reads unknown {qv.name!r}")
        outs = []
        for qo in qn.outputs:
            o = _copy_value(qo, name=f"{qo.name}__streamed" if qo.name in finals else qo.name)
            if qo.name in finals:
                replaced.append((finals[qo.name], o))
            outs.append(o)
            values[qo.name] = o
        new_nodes.append(ir.Node(qn.domain, qn.op_type, ins, _copy_attrs(qn), overload=qn.overload, outputs=outs,
                                 version=qn.version, name=qn.name, doc_string=qn.doc_string,
                                 metadata_props=dict(qn.metadata_props)))
    graph.insert_before(node, new_nodes)
    for old, new in replaced:
        old.replace_all_uses_with(new, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    for old, new in replaced:
        name, typ, shape = old.name, old.type, old.shape
        old.name = None
        new.name, new.type, new.shape = name, typ, shape
    for name, v in list(graph.initializers.items()):
        if name in {i.name for i in node.inputs if i is not None} and not v.uses() and not v.is_graph_output():
            _release(v)
            del graph.initializers[name]
    # the quantizer's model-level changes (com.microsoft opset, opset/IR version bumps for int4)
    for domain, version in quantized.opset_imports.items():
        main.opset_imports[domain] = version
    main.ir_version = quantized.ir_version


def _same_node(a: Any, b: Any) -> bool:
    return (a.op_type, a.domain, [v.name if v else "" for v in a.inputs]) == \
        (b.op_type, b.domain, [v.name if v else "" for v in b.inputs])


def _release(value: Any) -> None:
    """Drop a float weight; hand the source-file pages it was read from back to the kernel."""
    tensor = value.const_value
    value.const_value = None
    source = _torch_source(tensor)
    if source is not None:
        _drop_file_pages(source)


def _torch_source(tensor: Any) -> Any:
    """The torch tensor behind a builder initializer (a LazyTensor's closure or a TorchTensor)."""
    import torch

    if tensor is None:
        return None
    raw = getattr(tensor, "raw", None)
    if isinstance(raw, torch.Tensor):
        return raw
    func = getattr(tensor, "_func", None)
    for cell in getattr(func, "__closure__", None) or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        if isinstance(obj, torch.Tensor):
            return obj
    return None


def _file_mapping(addr: int) -> tuple[int, int] | None:
    """The private, file-backed mapping (e.g. safetensors' mmap) holding ``addr``, if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[1][3] == "p" and parts[5].strip().startswith("/"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    if lo <= addr < hi:
                        return lo, hi
    except OSError:
        pass
    return None


def _drop_file_pages(t: Any) -> None:
    """madvise(MADV_DONTNEED) the whole pages of ``t`` if it lives in a private file mapping (the
    safetensors mmap) and every resident page of it is still the file's (not copied-on-write):
    such pages are clean copies of the file, so the kernel drops them and a later read faults
    them back in from the file. Anything else is left alone."""
    if sys.platform != "linux" or t.dim() != 2 or not (t.is_contiguous() or t.T.is_contiguous()):
        return
    import ctypes
    import mmap

    start, size = t.data_ptr(), t.numel() * t.element_size()
    mapping = _file_mapping(start)
    if not size or mapping is None or start + size > mapping[1]:
        return
    page = mmap.PAGESIZE
    lo = (start + page - 1) // page * page
    hi = (start + size) // page * page
    if hi <= lo or not _all_file_pages(lo, hi, page):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), mmap.MADV_DONTNEED) != 0:
        log.debug("madvise failed: errno %d", ctypes.get_errno())


def _all_file_pages(lo: int, hi: int, page: int) -> bool:
    """True when every page in [lo, hi) is either a resident page of the file or not resident and
    not swapped: no copied-on-write (anonymous) page whose content the file does not hold
    (/proc/self/pagemap: bit 63 present, bit 62 swapped, bit 61 file-backed)."""
    import numpy as np

    n = (hi - lo) // page
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(lo // page * 8)
            entries = np.frombuffer(f.read(n * 8), dtype="<u8")
    except OSError:
        return False
    if len(entries) != n:
        return False
    present = (entries >> np.uint64(63)) & np.uint64(1)
    swapped = (entries >> np.uint64(62)) & np.uint64(1)
    file_backed = (entries >> np.uint64(61)) & np.uint64(1)
    return bool(np.all(((present == 0) & (swapped == 0)) | ((present == 1) & (file_backed == 1))))
