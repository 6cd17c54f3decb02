"""The source checkpoint through transformers on CPU: the reference every artifact is measured against."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .base import Generation, Runner

log = logging.getLogger(__name__)


def _stored_float_dtype(folder: Path) -> str | None:
    """The one floating dtype every safetensors tensor of ``folder`` is stored in ("BF16", "F16", "F32"), or None."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    found: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="np") as st:  # the header only: no tensor is read
            found |= {st.get_slice(k).get_dtype() for k in st.keys()}
    floats = found & {"BF16", "F16", "F32", "F64"}
    return next(iter(floats)) if files and len(floats) == 1 else None


def load_causal_lm(folder: Path, dtype: str):
    """The checkpoint as a transformers model in ``dtype``, with a peak of one copy of its weights.

    ``from_pretrained(dtype=float32)`` of a bf16/fp16 checkpoint keeps the whole memory-mapped file
    resident next to the fp32 weights until it returns (3.8B parameters: 14.2 + 7.1 GiB). Loaded in
    its stored dtype instead, every weight is a view of the mapping and nothing is read yet; each is
    then cast to ``dtype`` and its mapped pages dropped (``MappedPages``), so the peak is the fp32
    weights plus one bf16 weight. The values are those of the direct load: a widening cast is exact
    (tests/test_validation.py compares the logits bit for bit).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.fsutil import MappedPages

    want = getattr(torch, dtype)
    stored = {"BF16": torch.bfloat16, "F16": torch.float16}.get(_stored_float_dtype(folder) or "")
    if stored is None or want.itemsize <= stored.itemsize:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=want).eval()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=stored).eval()  # views of the mapped file
    release = MappedPages(*folder.glob("*.safetensors"))
    dropped = 0
    for tensor in [*model.parameters(), *model.buffers()]:  # tied weights once
        if tensor.dtype == stored:
            old = tensor.data
            tensor.data = old.to(want)
            dropped += release.release(old.data_ptr(), old.numel() * old.element_size())
            del old
    model.config.dtype = want
    log.info("loaded %s as %s and cast to %s (%.0f MiB of mapped checkpoint pages dropped)", folder.name,
             stored, want, dropped / 2**20)
    return model


class TransformersRunner(Runner):
    backend = "transformers"

    def __init__(self, folder: Path, dtype: str = "float32"):
        super().__init__(folder)
        import torch
        from transformers import AutoTokenizer

        self.torch = torch
        self.tok = self._hf_tok = AutoTokenizer.from_pretrained(self.folder)  # never trust_remote_code
        self.model = load_causal_lm(self.folder, dtype)

    def chat_prompt(self, messages):
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, messages, max_new_tokens):
        torch = self.torch
        prompt = self.chat_prompt(messages)
        ids = self.tok(prompt, add_special_tokens=False, return_tensors="pt")
        from transformers.generation.streamers import BaseStreamer

        calls: list[float] = []

        class _FirstToken(BaseStreamer):  # put() gets the prompt first, then each new token
            def put(self, value):
                calls.append(time.perf_counter())

            def end(self):
                pass

        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, streamer=_FirstToken(),
                                      pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        total = time.perf_counter() - t0
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        eos = {self.tok.eos_token_id} | set(np.atleast_1d(self.model.generation_config.eos_token_id or []).tolist())
        stopped = "max_new_tokens"
        if new and new[-1] in eos:
            new, stopped = new[:-1], "eos"
        return Generation(prompt=prompt, text=self.tok.decode(new, skip_special_tokens=True), token_ids=new,
                          stopped_by=stopped, first_token_s=calls[1] - t0 if len(calls) > 1 else total, total_s=total)

    def logits(self, ids):
        torch = self.torch
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([list(ids)], dtype=torch.int64))
        return out.logits[0].float().numpy()

    def close(self):
        self.model = None
