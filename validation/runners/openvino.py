"""OpenVINO IR through openvino-genai's LLMPipeline (the runtime the bundles target)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.config import OpenVINORuntime
from pipeline.errors import EnvironmentProblem

from .base import Generation, Runner

log = logging.getLogger(__name__)


class OpenVINORunner(Runner):
    backend = "openvino"

    def __init__(self, folder: Path, runtime: OpenVINORuntime):
        super().__init__(folder)
        from pipeline.export.openvino import disable_telemetry

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
        props = runtime.properties()
        Path(props["CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
        self.device = device
        self.pipe = ov_genai.LLMPipeline(str(self.folder), device, **props)
        self.tokenizer = self.pipe.get_tokenizer()

    def chat_prompt(self, messages):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def generate(self, messages, max_new_tokens):
        import openvino_genai as ov_genai

        prompt = self.chat_prompt(messages)
        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = max_new_tokens
        cfg.do_sample = False
        cfg.apply_chat_template = False  # already templated: never twice
        ids: list[int] = []
        first: list[float] = []
        t0 = time.perf_counter()

        class _Collect(ov_genai.StreamerBase):
            def write(self, token):  # token: int or list[int] depending on the version
                if not first:
                    first.append(time.perf_counter() - t0)
                ids.extend(token if isinstance(token, list) else [token])
                return ov_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        self.pipe.generate(prompt, cfg, _Collect())
        total = time.perf_counter() - t0
        eos = set(self._eos_ids(cfg))
        stopped = "eos" if (ids and ids[-1] in eos) or len(ids) < max_new_tokens else "max_new_tokens"
        ids = [i for i in ids if i not in eos]
        text = self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        return Generation(prompt=prompt, text=text, token_ids=ids, stopped_by=stopped,
                          first_token_s=first[0] if first else total, total_s=total, notes=list(self.notes))

    def _eos_ids(self, cfg) -> list[int]:
        gen = self.pipe.get_generation_config()
        ids = set(gen.stop_token_ids or [])
        if gen.eos_token_id is not None and gen.eos_token_id >= 0:
            ids.add(gen.eos_token_id)
        ids.add(self.tokenizer.get_eos_token_id())
        return sorted(ids)

    def close(self):
        self.pipe = None
        self.tokenizer = None
