"""ONNX Runtime GenAI models through onnxruntime_genai.

A bundle built for DirectML keeps ``dml`` as its provider on disk; to validate it on a machine
without DirectML the provider list is cleared in the *config object* only, so the same graph runs
on the CPU provider.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from aipc.pipeline.fsutil import read_json

from .base import Generation, Runner, Sampling

log = logging.getLogger(__name__)


def _available_providers() -> set[str]:
    try:
        import onnxruntime

        return {p.removesuffix("ExecutionProvider").lower() for p in onnxruntime.get_available_providers()}
    except ImportError:  # pragma: no cover
        return {"cpu"}


class OrtGenAIRunner(Runner):
    backend = "ortgenai"

    def __init__(self, folder: Path, device: str = "auto"):
        super().__init__(folder)
        import onnxruntime_genai as og

        self.og = og
        self.notes: list[str] = []
        dec = read_json(self.folder / "genai_config.json")["model"]["decoder"]
        providers = [next(iter(p)) for p in dec.get("session_options", {}).get("provider_options", [])]
        config = og.Config(str(self.folder))
        have = _available_providers()
        wanted = [p for p in providers if p.lower() in have or (p == "dml" and "dml" in have)]
        if device == "cpu" or (providers and not wanted):
            config.clear_providers()  # the config object only; the files keep their provider
            if providers:
                self.notes.append(f"provider {'/'.join(providers)} not available here: ran on the CPU provider")
                log.info(self.notes[-1])
        self.providers = providers
        self._device = "CPU provider" if device == "cpu" or not wanted else f"{'/'.join(wanted)} provider"
        # the window the runtime enforces (max_length <= context_length): genai_config.json's
        n = read_json(self.folder / "genai_config.json")["model"].get("context_length")
        self._context_length = n if isinstance(n, int) and n > 0 else None
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.eos = set(self.tokenizer.eos_token_ids)

    def device_used(self):
        return f"ONNX Runtime GenAI {self._device}"

    def chat_prompt(self, messages):
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def generate(self, messages, max_new_tokens):
        return self.stream(messages, Sampling(max_new_tokens=max_new_tokens, temperature=0.0), lambda _piece: None)

    def stream(self, messages, sampling, on_text):
        og = self.og
        prompt = self.chat_prompt(messages)
        ids = list(self.tokenizer.encode(prompt))
        self.check_context(len(ids), sampling.max_new_tokens)
        params = og.GeneratorParams(self.model)
        opts = {"do_sample": not sampling.greedy, "max_length": len(ids) + sampling.max_new_tokens, "batch_size": 1}
        if not sampling.greedy:
            opts.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.top_k > 0:
                opts["top_k"] = sampling.top_k
            if sampling.seed is not None:
                opts["random_seed"] = sampling.seed
        params.set_search_options(**opts)
        gen = og.Generator(self.model, params)
        stream = self.tokenizer.create_stream()
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        out: list[int] = []
        first = None
        stopped = "max_new_tokens"
        while not gen.is_done() and len(out) < sampling.max_new_tokens:
            gen.generate_next_token()
            tok = int(gen.get_next_tokens()[0])
            if first is None:
                first = time.perf_counter() - t0
            if tok in self.eos:
                stopped = "eos"
                break
            out.append(tok)
            on_text(stream.decode(tok))
        total = time.perf_counter() - t0
        del gen
        return Generation(prompt=prompt, text=self.tokenizer.decode(out) if out else "", token_ids=out,
                          stopped_by=stopped, first_token_s=first if first is not None else total, total_s=total,
                          notes=list(self.notes))

    def encode(self, text):
        return [int(x) for x in self.tokenizer.encode(text)]

    def decode(self, ids):
        return self.tokenizer.decode(list(ids))

    def logits(self, ids):
        import numpy as np

        og = self.og
        self.check_context(len(ids), 0)
        fits_one_more = self.context_length is None or len(ids) < self.context_length
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + int(fits_one_more), batch_size=1)
        gen = og.Generator(self.model, params)
        gen.append_tokens(list(ids))  # one prompt pass: logits for every position
        out = np.asarray(gen.get_output("logits"), dtype=np.float32)[0]
        del gen
        return out

    def close(self):
        self.tokenizer = None
        self.model = None
