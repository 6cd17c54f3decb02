"""The runner interface the harness uses for every backend."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from pathlib import Path

from aipc.pipeline.errors import ContextTooLong


@dataclass(frozen=True)
class Generation:
    """One greedy generation."""

    prompt: str                  # the chat-templated prompt the model saw
    text: str                    # the decoded new text (special tokens skipped)
    token_ids: list[int]         # the generated ids, EOS excluded
    stopped_by: str              # "eos" or "max_new_tokens"
    first_token_s: float
    total_s: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """Generation options of `aipc generate` / `aipc chat` (the seed's defaults)."""

    max_new_tokens: int = 1024
    temperature: float = 0.3   # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0             # 0 = off
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def check_context(context: int | None, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse, before generating, what does not fit ``context`` tokens (the runtimes either die with a
    traceback or silently answer garbage past it)."""
    if context is not None and prompt_tokens + max_new_tokens > context:
        room = context - prompt_tokens
        raise ContextTooLong(
            f"the prompt is {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: {prompt_tokens + max_new_tokens} "
            f"tokens, more than the model's context window of {context}",
            fix=(f"lower max_new_tokens (--max-new-tokens) to at most {room}, or shorten the prompt" if room > 0 else
                 f"shorten the prompt to fewer than {context} tokens (start a new chat, or trim the input)"))


class Runner(abc.ABC):
    """An artifact opened with its backend's own runtime."""

    backend: str = ""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @abc.abstractmethod
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The model's chat template applied once, with the generation prompt."""

    @abc.abstractmethod
    def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> Generation:
        """Greedy generation for a chat; the chat template is applied exactly once."""

    @property
    def context_length(self) -> int | None:
        """The model's context window in tokens: ``max_position_embeddings`` of the config.json the
        artifact ships (None when it records none)."""
        if not hasattr(self, "_context_length"):
            try:
                cfg = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
            n = cfg.get("max_position_embeddings") if isinstance(cfg, dict) else None
            self._context_length = n if isinstance(n, int) and n > 0 else None
        return self._context_length

    def check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Every backend's one rule: the prompt plus ``max_new_tokens`` must fit the context window."""
        check_context(self.context_length, prompt_tokens, max_new_tokens)

    def device_used(self) -> str:
        """Where the model runs, as the runtime chose it (after any fallback)."""
        return "CPU"

    def runtime_settings(self) -> dict[str, str]:
        """The device and runtime properties the artifact was opened with, as a user would pass
        them (recorded with the smoke results so the model card's snippet reproduces the measured
        run). Machine-local paths (cache folders) are left out."""
        return {}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with the tokenizer the artifact ships (no special tokens added).

        Default: the Hugging Face tokenizer files in the artifact folder; backends whose runtime
        has its own tokenizer (OpenVINO tokenizer IR, ORT GenAI) override this."""
        return list(self._hf_tokenizer().encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._hf_tokenizer().decode(ids, skip_special_tokens=False)

    def _hf_tokenizer(self):
        tok = getattr(self, "_hf_tok", None)
        if tok is None:
            from transformers import AutoTokenizer

            tok = self._hf_tok = AutoTokenizer.from_pretrained(self.folder)
        return tok

    def logits(self, ids: list[int]):
        """Next-token logits (float32 numpy array [len(ids), vocab]) for ``ids`` under teacher
        forcing: row i is the distribution after ids[: i + 1]. No special tokens are added."""
        raise NotImplementedError(f"{type(self).__name__} has no teacher-forcing logits yet")

    def stream(self, messages: list[dict[str, str]], sampling: Sampling, on_text) -> Generation:
        """Generate, calling ``on_text(piece)`` as text arrives. Default (backends without a
        streaming API): greedy generation, delivered in one piece."""
        gen = self.generate(messages, sampling.max_new_tokens)
        on_text(gen.text)
        return Generation(prompt=gen.prompt, text=gen.text, token_ids=gen.token_ids, stopped_by=gen.stopped_by,
                          first_token_s=gen.first_token_s, total_s=gen.total_s,
                          notes=gen.notes + ["this backend does not stream or sample: greedy, one piece"])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime's memory."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
