"""Regenerate validation/data/calibration/*.txt (run once by a maintainer; the pipeline reads the copies).

python_topics.txt: topics of CPython's ``pydoc_data.topics`` that are not evaluation topics, joined with
blank lines; apache2.txt: the Apache License 2.0 text (Debian ``/usr/share/common-licenses/Apache-2.0``).
Any paragraph sharing an 8-word sequence with an evaluation text is dropped (tests/test_calibration.py
checks the shipped files stay disjoint).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ("typesseq", "string-methods", "typesmapping", "exceptions", "try", "while")
APACHE = Path("/usr/share/common-licenses/Apache-2.0")


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def main() -> int:
    import pydoc_data.topics as topics

    held_out: set[tuple[str, ...]] = set()
    for f in sorted((ROOT / "validation/data/eval").glob("*.txt")):
        held_out |= ngrams(f.read_text(encoding="utf-8"))
    out = ROOT / "validation/data/calibration"
    texts = {"python_topics": "\n\n".join(topics.topics[k].strip() for k in TOPICS),
             "apache2": APACHE.read_text(encoding="utf-8").strip()}
    for name, text in texts.items():
        kept = [p for p in text.split("\n\n") if not ngrams(p) & held_out]
        (out / f"{name}.txt").write_text("\n\n".join(kept) + "\n", encoding="utf-8")
        print(f"{name}: {len(kept)} paragraphs, {sum(map(len, kept))} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
