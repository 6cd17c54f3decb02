"""The calibration stage: token windows for data-aware INT4 compression, built offline.

The texts are shipped in ``validation/data/calibration/`` (see SOURCES.md there) and share nothing
with the evaluation texts (tests/test_calibration.py). Windows of ``calibration.seq_len`` tokens are
cut from each text with the model's own tokenizer (no special tokens, like the evaluation windows) and
taken round-robin over the texts until ``calibration.num_samples``. With ``template: chat`` each chunk
is rendered as a user turn of the model's chat template (then cut to ``seq_len``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .config import CalibrationSection, Params
from .errors import ConfigError
from .fsutil import atomic_dir, read_json, write_json
from .texts import read_text, text_label, text_record

log = logging.getLogger(__name__)

WINDOWS_NPY = "windows.npy"
CALIBRATION_JSON = "calibration.json"


def calibration_text(entry: str) -> str:
    """One entry of calibration.texts: a shipped text's name or a user's file (pipeline/texts.py)."""
    return read_text("calibration", entry)


def calibration_windows(tokenizer, cal: CalibrationSection) -> np.ndarray:
    """[num_samples, seq_len] token ids, round-robin over ``cal.texts``."""
    per_text: list[list[list[int]]] = []
    for name in cal.texts:
        ids = tokenizer.encode(calibration_text(name), add_special_tokens=False)
        if cal.template == "chat":
            body = max(cal.seq_len // 2, 8)  # room for the template's tokens; cut to seq_len below
            chunks = [tokenizer.decode(ids[i:i + body]) for i in range(0, len(ids) - body + 1, body)]
            wins = [tokenizer.apply_chat_template([{"role": "user", "content": c}], tokenize=True,
                                                  add_generation_prompt=False) for c in chunks]
            wins = [list(w["input_ids"] if isinstance(w, dict) else w)[:cal.seq_len] for w in wins]
            wins = [w for w in wins if len(w) == cal.seq_len]
        else:
            wins = [ids[i:i + cal.seq_len] for i in range(0, len(ids) - cal.seq_len + 1, cal.seq_len)]
        per_text.append(wins)
    out: list[list[int]] = []
    for i in range(max(map(len, per_text), default=0)):
        for wins in per_text:
            if i < len(wins) and len(out) < cal.num_samples:
                out.append(wins[i])
    if len(out) < cal.num_samples:
        raise ConfigError(
            f"params.yaml: calibration.num_samples = {cal.num_samples}, but the texts {', '.join(cal.texts)} give "
            f"only {len(out)} windows of {cal.seq_len} tokens",
            fix="lower calibration.num_samples or calibration.seq_len, or add a text (a shipped one, or your own "
                ".txt file under texts/)")
    return np.asarray(out, dtype=np.int64)


def build_calibration(params: Params, source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Tokenize the calibration texts with the model's tokenizer into ``out_dir``."""
    from transformers import AutoTokenizer

    cal = params.calibration
    if cal is None:
        raise ConfigError("params.yaml has no calibration: section",
                          fix="add calibration: {texts: [apache2, python_topics], seq_len: 128, num_samples: 64}")
    tok = AutoTokenizer.from_pretrained(source_dir)
    windows = calibration_windows(tok, cal)
    meta = {
        "params": cal.model_dump(mode="json"),
        "texts": {text_label(n): text_record("calibration", n) for n in cal.texts},
        "shape": list(windows.shape),
        "tokens": int(windows.size),
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / WINDOWS_NPY, windows)
        write_json(tmp / CALIBRATION_JSON, meta)
    log.info("calibration: %d windows x %d tokens from %s", *windows.shape, ", ".join(cal.texts))
    return meta


def load_calibration(folder: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(meta, [num_samples, seq_len] ids) written by :func:`build_calibration`."""
    from .errors import SourceError

    if not (folder / WINDOWS_NPY).is_file():
        raise SourceError(f"{folder}: no calibration windows", fix="run `dvc repro calibration` (or `aipc calibration`)")
    return read_json(folder / CALIBRATION_JSON), np.load(folder / WINDOWS_NPY)
