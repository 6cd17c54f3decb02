"""The ONNX Runtime GenAI model builder (``onnxruntime_genai.models.builder``): its Python entry and the
patches of its internals the pipeline makes while it runs.

* :func:`run_builder`: ``parse_extra_options`` + ``create_model``, what the builder's ``-m`` form runs,
  with :func:`the_packages_commit`: ``Model.get_genai_commit`` answers the installed package's commit.
* :func:`layers_without_random_init`: its ``Model.make_layer`` under transformers' ``no_init_weights``.
* :func:`unquantized_graph_on_disk`: the one ``ir.to_proto`` call in its ``Model.to_nbits`` spills the
  float graph to disk.

The builder imports its classes as the top-level module ``builders.base``; every patch finds ``Model``
there (:func:`_patchable`) and, if that layout changes, logs a warning and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .gate import Gate

log = logging.getLogger(__name__)

GATE = Gate("onnxruntime-genai", ("0.18.0",), __name__)


def run_builder(key: str, precision: str, execution_provider: str, extra_options: dict[str, Any], source_dir: Path,
                out: Path, cache: Path) -> None:
    """The builder's Python entry (what its ``-m`` form runs) for one variant, options as extra_options."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    extra = [f"{k}={v}" for k, v in extra_options.items()]
    log.info("building ORT GenAI %s (%s, %s%s)", key, precision, execution_provider,
             f", {' '.join(extra)}" if extra else "")
    options = parse_extra_options(
        model_name=str(source_dir), input_path=str(source_dir), output_dir=str(out),
        precision=precision, execution_provider=execution_provider,
        cache_dir=str(cache), extra_options=extra,
    )
    with the_packages_commit():
        create_model(str(source_dir), str(source_dir), str(out), precision, execution_provider,
                     str(cache), **options)


@contextlib.contextmanager
def the_packages_commit() -> Iterator[str | None]:
    """While the builder runs, it stamps the commit of the installed onnxruntime-genai package
    (``onnxruntime_genai.__commit__``) into ``model.onnx``'s producer_version.

    The 0.18 builder looks for its commit with ``git rev-parse HEAD`` five folders above its own file
    (``Model.get_genai_commit``, meant for a source checkout). A virtual environment inside a git
    checkout, like this project's ``.venv``, answers with that checkout's HEAD: the model's bytes then
    changed with every commit of this repository, and named a commit the builder never had. Outside any
    git checkout the builder falls back to ``__commit__``; this makes that the answer everywhere. Yields
    the commit (None, with a warning and nothing changed, if the builder's layout is not recognized).
    """
    from unittest import mock

    import onnxruntime_genai

    commit = getattr(onnxruntime_genai, "__commit__", None)
    if not commit:
        log.warning("onnxruntime-genai records no __commit__: model.onnx names the commit git finds")
    model_class = _patchable("get_genai_commit", "model.onnx names the commit git finds") if commit else None
    if model_class is None:
        yield None
        return
    with mock.patch.object(model_class, "get_genai_commit", classmethod(lambda cls: commit)):
        yield commit


SPILL_DIR = ".aipc-unquantized"


def _spill_to_disk(model: Any, spill_dir: Path) -> Any:
    """``ir.to_proto(model)``, but every initializer over 1 KiB lives in ``spill_dir`` as external data.

    The locations are absolute, so ORT's quantizer (``ir.from_proto(t).numpy()``, no base dir)
    memory-maps each weight from the file only while it quantizes it.
    """
    import onnx
    import onnx_ir as ir

    spill_dir.mkdir(parents=True, exist_ok=True)
    path, data = spill_dir / "unquantized.onnx", spill_dir / "unquantized.onnx.data"
    ir.save(model, path, external_data=data.name, size_threshold_bytes=1024)
    proto = onnx.load(str(path), load_external_data=False)
    data_path = str(data.resolve())
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = data_path
    return proto


def builder_model_class() -> Any:
    """The builder's ``builders.base.Model`` (imported as a top-level module by the builder), or None."""
    import onnxruntime_genai.models.builder  # noqa: F401  (puts its `builders` package on sys.path)

    base = sys.modules.get("builders.base")
    return getattr(base, "Model", None) if base is not None else None


def _patchable(method: str, otherwise: str) -> Any:
    """The builder's ``Model`` when it has ``method`` to patch; else None, with a warning saying ``otherwise``
    (what the build does without the patch)."""
    model_class = builder_model_class()
    if model_class is None or not hasattr(model_class, method):
        log.warning("onnxruntime-genai builder layout not recognized: %s", otherwise)
        return None
    return model_class


@contextlib.contextmanager
def layers_without_random_init() -> Iterator[bool]:
    """While the builder maps each decoder layer to ONNX ops, torch's weight-init functions do nothing.

    To split a fused projection (Phi-3's ``qkv_proj`` and ``gate_up_proj``) the builder creates
    ``torch.nn.Linear`` modules and assigns each a slice of the loaded weight right after, so the
    fp32 random init ``Linear`` runs in its constructor is computed and thrown away: measured 2.5 s of
    a 23 s dml-int4 build at 4 Phi-3-mini layers, about 20 s per variant at 32 layers. Wraps only the
    builder's ``make_layer`` (the weights are already loaded then) in transformers' own
    ``no_init_weights``; the written model is byte-identical (tests/test_ortgenai.py). Yields whether
    the wrap is in place (False, with a warning, if the builder's layout changed).
    """
    from unittest import mock

    from transformers.initialization import no_init_weights

    model_class = _patchable("make_layer", "its layers are built with torch's random init")
    if model_class is None:
        yield False
        return
    upstream = model_class.make_layer

    def make_layer(self: Any, *args: Any, **kwargs: Any) -> Any:
        with no_init_weights():
            return upstream(self, *args, **kwargs)

    with mock.patch.object(model_class, "make_layer", make_layer):
        yield True


@contextlib.contextmanager
def unquantized_graph_on_disk(spill_dir: Path, enabled: bool = True) -> Iterator[list[Path]]:
    """While the builder runs, its ``to_nbits`` gets the float graph from disk, not from memory.

    Wraps only the one ``ir.to_proto(self.model)`` call inside the builder's own ``to_nbits``;
    everything else (quantizer choice, mixed precision, exact overrides) is the builder's code.
    Yields the list of spill folders used (empty: the graph stayed in memory). The builder imports its classes as the top-level
    module ``builders.base``; if that layout changes, this logs a warning and changes nothing.

    Only for the builder's default quantizer (``enabled``): its RTN / k_quant paths load weights
    through ``onnx.numpy_helper``, which refuses absolute external-data locations, and they
    rebuild the whole graph anyway, so they keep the upstream in-memory path.
    """
    from unittest import mock

    import onnx_ir as ir

    spills: list[Path] = []
    if not enabled:
        yield spills
        return
    model_class = _patchable("to_nbits", "INT4 quantization runs in memory")
    if model_class is None:
        yield spills
        return
    upstream_to_nbits = model_class.to_nbits
    real_to_proto = ir.to_proto

    def to_nbits(self: Any) -> Any:
        def to_proto(obj: Any) -> Any:
            if obj is self.model:
                spills.append(spill_dir / str(len(spills) + 1))
                return _spill_to_disk(obj, spills[-1])
            return real_to_proto(obj)

        with mock.patch.object(ir, "to_proto", to_proto):
            return upstream_to_nbits(self)

    try:
        with mock.patch.object(model_class, "to_nbits", to_nbits):
            yield spills
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
