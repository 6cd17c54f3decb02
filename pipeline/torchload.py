"""Loading a transformers checkpoint at a wider dtype than it is stored in, at one copy of its weights.

Used by the reference model (validation.runners.transformers) and by the NPU environment's compile
step (envs/npu/aipc_npu: transformers 4.57 there, 5.x here; both memory-map safetensors the same
way). Imports nothing of the project but ``fsutil`` (standard library only), so the NPU environment
can import it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .fsutil import MappedPages, safetensors_header

log = logging.getLogger(__name__)


def _stored_float_dtype(folder: Path) -> str | None:
    """The one floating dtype every safetensors tensor of ``folder`` is stored in ("BF16", "F16", "F32"), or None."""
    files = sorted(folder.glob("*.safetensors"))
    found = {t["dtype"] for f in files for t in safetensors_header(f).values()}
    floats = found & {"BF16", "F16", "F32", "F64"}
    return next(iter(floats)) if files and len(floats) == 1 else None


_CHUNK = 1 << 22  # elements cast (and mapped pages dropped) per step


def _cast_releasing(tensor: Any, want: Any, release: MappedPages) -> int:
    """``tensor.data = tensor.data.to(want)`` in chunks, each chunk's mapped pages dropped once it is cast,
    so that not even one whole 16-bit weight (the embedding: 0.3 GiB at Phi-3-mini shapes) stays resident
    next to its copy. Returns the bytes dropped."""
    import mmap

    import torch

    old = tensor.data
    if not old.is_contiguous():
        tensor.data = old.to(want)
        return 0
    new = torch.empty(old.shape, dtype=want)
    src, dst = old.reshape(-1), new.reshape(-1)
    ptr, size = old.data_ptr(), old.element_size()
    dropped = last = 0
    for i in range(0, src.numel(), _CHUNK):
        j = min(i + _CHUNK, src.numel())
        dst[i:j] = src[i:j]
        # whole pages from the first not yet dropped up to this chunk's end
        dropped += release.release(ptr + last, j * size - last)
        last = max((ptr + j * size) // mmap.PAGESIZE * mmap.PAGESIZE - ptr, 0)
    tensor.data = new
    return dropped


def load_causal_lm(folder: Path, dtype: str, **kwargs: Any):
    """The checkpoint as a transformers model in ``dtype``, with a peak of one copy of its weights.

    ``from_pretrained(dtype=float32)`` of a bf16/fp16 checkpoint keeps the whole memory-mapped file
    resident next to the fp32 weights until it returns (3.8B parameters: 14.2 + 7.1 GiB). Loaded in
    its stored dtype instead, every weight is a view of the mapping and nothing is read yet; each is
    then cast to ``dtype`` in chunks and each chunk's mapped pages dropped (``MappedPages``), so the
    peak is the fp32 weights plus one chunk. The values are those of the direct load: a widening cast is exact
    (tests/test_reference_load.py compares weights and logits bit for bit).
    """
    import torch
    from transformers import AutoModelForCausalLM

    want = getattr(torch, dtype)
    stored = {"BF16": torch.bfloat16, "F16": torch.float16}.get(_stored_float_dtype(folder) or "")
    if stored is None or want.itemsize <= stored.itemsize:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=want, **kwargs).eval()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=stored, **kwargs).eval()  # views of the mapped file
    release = MappedPages(*folder.glob("*.safetensors"))
    dropped = 0
    for tensor in [*model.parameters(), *model.buffers()]:  # tied weights once
        if tensor.dtype == stored:
            dropped += _cast_releasing(tensor, want, release)
    model.config.dtype = want
    log.info("loaded %s as %s and cast to %s (%.0f MiB of mapped checkpoint pages dropped)", folder.name,
             stored, want, dropped / 2**20)
    return model
