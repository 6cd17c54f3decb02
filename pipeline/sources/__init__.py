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


def source_config(model: ModelSource, downloaded: Path | None = None) -> tuple[dict | None, str]:
    """The model's config.json as far as it can be read without the network or loading weights, and where
    it came from: the download stage's output if there is one, a local source's folder (the whole
    checkpoint checked: Phi-3 config, safetensors headers, tokenizer), the Hub cache for a pinned Hub
    revision, the embedded model's known shapes. ``(None, why)`` when nothing is on disk yet."""
    from .checkpoint import read_model_config

    if downloaded is not None and (downloaded / "config.json").is_file():
        return read_model_config(downloaded), str(downloaded / "config.json")
    if isinstance(model, LocalSource):
        folder = Path(model.path).expanduser()
        if not folder.is_dir():
            from ..errors import SourceError

            raise SourceError(f"params.yaml: model.path = {model.path!r}: not a directory",
                              fix="point model.path at a folder holding a Phi-3 checkpoint")
        return check_checkpoint(folder), str(folder / "config.json")
    if isinstance(model, HubSource):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover
            return None, "huggingface_hub not installed"
        cached = try_to_load_from_cache(model.repo_id, "config.json", revision=model.revision)
        if isinstance(cached, str):
            from .checkpoint import check_phi3_config

            cfg = check_phi3_config(read_model_config(Path(cached).parent),
                                    f"{model.repo_id}@{model.revision} config.json (Hub cache)")
            return cfg, f"the Hub cache ({model.repo_id}@{model.revision})"
        return None, f"{model.repo_id}@{model.revision} is not downloaded yet (`aipc download` checks it)"
    return None, "the embedded model (its shapes are checked with params.yaml)"


def _read_provenance(path: Path) -> dict:
    from ..fsutil import read_json

    return {"provenance": read_json(path)} if path.exists() else {}
