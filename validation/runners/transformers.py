"""The source checkpoint through transformers on CPU: the reference every artifact is measured against."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aipc.pipeline.torchload import load_causal_lm

from .base import Generation, Runner


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
        self.check_context(int(ids["input_ids"].shape[1]), max_new_tokens)
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
        self.check_context(len(ids), 0)
        torch = self.torch
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([list(ids)], dtype=torch.int64))
        return out.logits[0].float().numpy()

    def close(self):
        self.model = None
