"""Model sources: the Hub, a local directory, or the embedded model.

Each produces the same thing: a folder with a Phi-3 transformers checkpoint (safetensors weights,
config, tokenizer, chat template) plus ``source.json`` recording where it came from and the sha256
of every file. :func:`materialize` is the single entry point the download stage calls.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config import EmbeddedSource, HubSource, LocalSource, ModelSource
from ..fsutil import atomic_dir, file_table, write_json
from .checkpoint import SOURCE_JSON, check_checkpoint

log = logging.getLogger(__name__)


def materialize(model: ModelSource, out_dir: Path) -> dict:
    """Fetch/convert the model into ``out_dir`` atomically; return the source record."""
    with atomic_dir(out_dir) as tmp:
        if isinstance(model, HubSource):
            from .hub import download

            record = download(model, tmp)
        elif isinstance(model, LocalSource):
            from .local import copy_local

            record = copy_local(model, tmp)
        elif isinstance(model, EmbeddedSource):
            from .embedded import embedded_checkpoint

            cached = embedded_checkpoint()
            for p in sorted(cached.iterdir()):
                if p.is_file():
                    shutil.copyfile(p, tmp / p.name)
            record = {"source": "embedded", **_read_provenance(tmp / "embedded.json")}
        else:  # pragma: no cover - the schema makes this unreachable
            raise TypeError(model)
        check_checkpoint(tmp)
        record["name"] = model.name
        record["files"] = file_table(tmp, exclude=(SOURCE_JSON,))
        write_json(tmp / SOURCE_JSON, record)
    log.info("source ready: %s (%d files)", out_dir, len(record["files"]))
    return record


def _read_provenance(path: Path) -> dict:
    from ..fsutil import read_json

    return {"provenance": read_json(path)} if path.exists() else {}
