"""intel-npu-acceleration-library 1.4.0 artifacts, run by a persistent worker in the NPU environment.

All loading goes through :func:`pipeline.export.npu.load_npu_artifact` (sha256 and version checks
before the pickle is opened). With no NPU present the library runs on OpenVINO's CPU plugin and
every generation carries the note ``NPU not available: ran on CPU fallback``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aipc.pipeline.config import NPUSection
from aipc.pipeline.export.npu import FALLBACK_NOTE, load_npu_artifact

from .base import Generation, Runner

log = logging.getLogger(__name__)


class NPURunner(Runner):
    backend = "npu"

    def __init__(self, folder: Path, npu: NPUSection):
        super().__init__(folder)
        self.artifact = load_npu_artifact(self.folder, npu)
        self.notes: list[str] = []
        if self.artifact.device_fallback:
            self.notes.append(FALLBACK_NOTE)
            log.warning("%s: %s", self.folder, FALLBACK_NOTE)

    def device_used(self):
        return "CPU (NPU fallback)" if self.artifact.device_fallback else "NPU"

    def chat_prompt(self, messages):
        return self.artifact.chat_prompt(messages)

    def generate(self, messages, max_new_tokens):
        r = self.artifact.generate(messages, max_new_tokens)
        return Generation(prompt=r["prompt"], text=r["text"], token_ids=list(r["token_ids"]),
                          stopped_by=r["stopped_by"], first_token_s=float(r["first_token_s"]),
                          total_s=float(r["total_s"]), notes=list(self.notes))

    def logits(self, ids):
        return self.artifact.logits(list(ids))

    def close(self):
        if getattr(self, "artifact", None) is not None:
            self.artifact.close()
            self.artifact = None
