"""Tokenizer parity: the tokenizer an artifact ships against the source tokenizer."""

from __future__ import annotations

from typing import Any

# Tricky strings: whitespace runs, digits after spaces, Unicode (accents, CJK, emoji, RTL),
# control-ish characters, and the chat special tokens.
PROBES = [
    "Hello world 12345",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n  indented",
    "x = [1, 22, 333]  # 7 apples and 3.14159",
    "naïve café — déjà vu, Ærøskøbing",
    "東京タワー 和 北京 🙂👍🏽",
    "مرحبا بالعالم",
    "<|im_start|>user\nhi<|im_end|>",
    "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>",
    "def f(x):\n    return x ** 2  # comment",
    "    99 bottles",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _strip_special(text: str, specials: list[str]) -> str:
    for tok in sorted(specials, key=len, reverse=True):
        text = text.replace(tok, "")
    return text


def tokenizer_parity(runner, source_tokenizer) -> dict[str, Any]:
    """Encode agreement with the source, exact decode round trips (a runtime whose decode drops
    special tokens, like ORT GenAI's, must give the text without them), and the chat template."""
    specials = list(getattr(source_tokenizer, "all_special_tokens", []))
    encode_equal, roundtrip, mismatches, roundtrip_failures = 0, 0, [], []
    for s in PROBES:
        got = runner.encode(s)
        want = list(source_tokenizer.encode(s, add_special_tokens=False))
        if got == want:
            encode_equal += 1
        else:
            mismatches.append({"text": s, "artifact": got[:16], "source": want[:16]})
        back = runner.decode(got)
        if back in (s, _strip_special(s, specials)):
            roundtrip += 1
        else:
            roundtrip_failures.append({"text": s, "decoded": back})
    artifact_chat = runner.chat_prompt(CHAT)
    source_chat = source_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    return {
        "probes": len(PROBES),
        "encode_agreement": encode_equal / len(PROBES),
        "roundtrip_exact": roundtrip / len(PROBES),
        "chat_template_equal": artifact_chat == source_chat,
        "mismatches": mismatches,
        "roundtrip_failures": roundtrip_failures,
    }
