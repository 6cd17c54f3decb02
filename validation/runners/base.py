"""The runner interface the harness uses for every backend."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path


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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime's memory."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
