"""OpenVINO IR through its own runtimes: openvino-genai's LLMPipeline for generation and the
tokenizer/detokenizer IR, optimum-intel's OVModelForCausalLM (OpenVINO runtime) for teacher-forced
logits. Each is created on first use, so a stage only loads what it needs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from aipc.pipeline.config import OpenVINORuntime
from aipc.pipeline.errors import EnvironmentProblem
from aipc.pipeline.fsutil import pages_dropped_while

from .base import Generation, Runner

log = logging.getLogger(__name__)


class OpenVINORunner(Runner):
    backend = "openvino"

    def __init__(self, folder: Path, runtime: OpenVINORuntime):
        super().__init__(folder)
        from aipc.pipeline.toolchain import disable_telemetry

        disable_telemetry()
        import openvino as ov
        import openvino_genai as ov_genai

        device = runtime.device
        available = ov.Core().available_devices
        self.notes: list[str] = []
        if device != "AUTO" and device.split(".")[0] not in {d.split(".")[0] for d in available}:
            if device == "CPU":
                raise EnvironmentProblem("OpenVINO reports no CPU device", fix="check the openvino install")
            self.notes.append(f"device {device} not present (have {', '.join(available)}); fell back to CPU")
            log.warning(self.notes[-1])
            device = "CPU"
        self.props = runtime.properties(device)
        if "CACHE_DIR" in self.props:
            Path(self.props["CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
        self.device = device
        self.tokenizer = ov_genai.Tokenizer(str(self.folder))
        self._pipe = None
        self._model = None

    @property
    def pipe(self):
        if self._pipe is None:
            import openvino_genai as ov_genai

            # The CPU plugin packs its own copy of the weights from the mapped IR (or cached blob) while
            # compiling and at the first inference; the mapped pages would stay resident next to it.
            with pages_dropped_while(self.folder, *self._cache_dirs()):
                self._pipe = ov_genai.LLMPipeline(str(self.folder), self.device, **self.props)
                cfg = ov_genai.GenerationConfig()
                cfg.max_new_tokens, cfg.do_sample, cfg.apply_chat_template = 1, False, False
                self._pipe.generate("Hello", cfg)  # the first inference: weights packed before any clock starts
        return self._pipe

    def _cache_dirs(self) -> list[str]:
        return [self.props["CACHE_DIR"]] if "CACHE_DIR" in self.props else []

    def device_used(self):
        return f"OpenVINO {self.device}"

    def runtime_settings(self):
        return {"device": self.device, **{k: v for k, v in self.props.items() if k != "CACHE_DIR"}}

    def chat_prompt(self, messages):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def encode(self, text):
        return [int(x) for x in self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def generate(self, messages, max_new_tokens):
        import openvino_genai as ov_genai

        prompt = self.chat_prompt(messages)
        self.check_context(len(self.encode(prompt)), max_new_tokens)
        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = max_new_tokens
        cfg.do_sample = False
        cfg.apply_chat_template = False  # already templated: never twice
        ids: list[int] = []
        first: list[float] = []
        pipe = self.pipe  # compiled before the clock starts
        t0 = time.perf_counter()

        class _Collect(ov_genai.StreamerBase):
            def write(self, token):  # token: int or list[int] depending on the version
                if not first:
                    first.append(time.perf_counter() - t0)
                ids.extend(token if isinstance(token, list) else [token])
                return ov_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        pipe.generate(prompt, cfg, _Collect())
        total = time.perf_counter() - t0
        eos = set(self._eos_ids())
        stopped = "eos" if (ids and ids[-1] in eos) or len(ids) < max_new_tokens else "max_new_tokens"
        ids = [i for i in ids if i not in eos]
        text = self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        return Generation(prompt=prompt, text=text, token_ids=ids, stopped_by=stopped,
                          first_token_s=first[0] if first else total, total_s=total, notes=list(self.notes))

    def stream(self, messages, sampling, on_text):
        import openvino_genai as ov_genai

        prompt = self.chat_prompt(messages)
        self.check_context(len(self.encode(prompt)), sampling.max_new_tokens)
        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = sampling.max_new_tokens
        cfg.apply_chat_template = False
        cfg.do_sample = not sampling.greedy
        if not sampling.greedy:
            cfg.temperature = sampling.temperature
            cfg.top_p = sampling.top_p
            cfg.top_k = sampling.top_k if sampling.top_k > 0 else 0
            if sampling.seed is not None:
                cfg.rng_seed = sampling.seed
        pipe = self.pipe  # compiled before the clock starts
        t0 = time.perf_counter()
        first: list[float] = []

        def streamer(piece: str):
            if not first:
                first.append(time.perf_counter() - t0)
            on_text(piece)
            return ov_genai.StreamingStatus.RUNNING

        res = pipe.generate([prompt], cfg, streamer)
        total = time.perf_counter() - t0
        n = int(res.perf_metrics.get_num_generated_tokens())
        text = res.texts[0]
        return Generation(prompt=prompt, text=text, token_ids=[0] * n,
                          stopped_by="max_new_tokens" if n >= sampling.max_new_tokens else "eos",
                          first_token_s=first[0] if first else total, total_s=total, notes=list(self.notes))

    def _eos_ids(self) -> list[int]:
        gen = self.pipe.get_generation_config()
        ids = set(gen.stop_token_ids or [])
        if gen.eos_token_id is not None and gen.eos_token_id >= 0:
            ids.add(gen.eos_token_id)
        ids.add(self.tokenizer.get_eos_token_id())
        return sorted(ids)

    def logits(self, ids):
        import torch

        self.check_context(len(ids), 0)
        x = torch.tensor([list(ids)], dtype=torch.int64)
        if self._model is None:
            from optimum.intel import OVModelForCausalLM

            # as for the pipeline; optimum also keeps the read model, so the file would stay mapped and
            # resident to the end: compile and the first inference (weight packing) drop its pages
            with pages_dropped_while(self.folder, *self._cache_dirs()):
                # a str, not a Path: see pipeline/export/openvino.py (optimum-intel's format probe)
                from aipc.pipeline.compat.optimum_intel import quiet_offline_format_probe

                quiet_offline_format_probe()
                self._model = OVModelForCausalLM.from_pretrained(str(self.folder), device=self.device,
                                                                 ov_config=dict(self.props), compile=True)
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x):
        import torch

        with torch.no_grad():  # a call without past_key_values starts from an empty KV state
            out = self._model(input_ids=x, attention_mask=torch.ones_like(x))
        return np.asarray(out.logits[0].float().numpy(), dtype=np.float32)

    def close(self):
        self._pipe = None
        self._model = None
        self.tokenizer = None
