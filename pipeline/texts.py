"""Evaluation and calibration texts: the shipped ones by name, or the user's own files by path.

An entry of ``validation.texts`` or ``calibration.texts`` is either the name of a shipped text
(``validation/data/eval/<name>.txt``, ``validation/data/calibration/<name>.txt``; SOURCES.md there) or
a path under the project's or workspace's ``texts/`` folder, such as ``texts/our-docs.txt``. The
reference and calibration stages depend on that folder in dvc.yaml, so DVC reruns them when a file
there changes; the file and sha256 of every text used go into the stage's record, and from there into
each bundle's manifest. A text is named by its file's stem in the records (``our-docs``).
"""

from __future__ import annotations

from pathlib import Path

from .config import USER_TEXTS_DIR, text_label
from .errors import ConfigError
from .fsutil import sha256_file

# the shipped texts stay package data of `validation` (validation/data/, SOURCES.md there); records name them
# by that path, so moving them would change every calibration and reference record
DATA = Path(__file__).resolve().parent.parent / "validation" / "data"
SHIPPED = {"validation": DATA / "eval", "calibration": DATA / "calibration"}


def text_path(section: str, entry: str) -> Path:
    """The file of one entry of ``<section>.texts``: a shipped text, or the user's path (relative to the
    folder the stage runs in: the project or the workspace)."""
    shipped = SHIPPED[section] / f"{entry}.txt"
    if "/" not in entry and shipped.is_file():
        return shipped
    path = Path(entry)
    if not path.is_file():
        raise ConfigError(f"params.yaml: {section}.texts: {entry}: no such file (in {Path.cwd()})",
                          fix=f"put the text under {USER_TEXTS_DIR}/ in the folder you run dvc in "
                              f"(DVC tracks that folder), or name a shipped one: "
                              f"{', '.join(sorted(p.stem for p in SHIPPED[section].glob('*.txt')))}")
    return path


def read_text(section: str, entry: str) -> str:
    path = text_path(section, entry)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"params.yaml: {section}.texts: {entry}: not UTF-8 text ({err.reason} at byte {err.start})",
                          fix="save it as UTF-8 plain text") from None
    if not text.strip():
        raise ConfigError(f"params.yaml: {section}.texts: {entry}: the file is empty", fix="give it some text")
    return text


def text_record(section: str, entry: str) -> dict[str, str]:
    """What a stage records of a text it used: the file (as params name it) and its sha256."""
    path = text_path(section, entry)
    shown = path.relative_to(DATA.parent.parent).as_posix() if path.parent == SHIPPED[section] else entry
    return {"file": shown, "sha256": sha256_file(path)}


__all__ = ["text_label", "text_path", "read_text", "text_record"]
