"""A local directory as the model source."""

from __future__ import annotations

import fnmatch
import logging
import shutil
from pathlib import Path

from ..config import LocalSource
from ..errors import SourceError
from .checkpoint import ALLOW_PATTERNS, check_checkpoint

log = logging.getLogger(__name__)


def copy_local(model: LocalSource, out: Path) -> dict:
    src = Path(model.path).expanduser()
    if not src.is_dir():
        raise SourceError(f"params.yaml: model.path = {model.path!r}: not a directory",
                          fix="point model.path at a folder holding a Phi-3 checkpoint")
    check_checkpoint(src)
    for p in sorted(src.iterdir()):
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in ALLOW_PATTERNS):
            shutil.copyfile(p, out / p.name)
    return {"source": "local", "path": str(src.resolve())}
