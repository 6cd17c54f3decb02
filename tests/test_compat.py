"""The compat place (pipeline/compat/): the installed upstream versions are the ones each module was checked
against, and each private name it calls still has the shape it calls it with. On a lock update either fails,
naming the module to re-check."""

from __future__ import annotations

import inspect
import logging
import sys

import pytest

from aipc.pipeline.compat import Gate, gates


@pytest.mark.parametrize("gate", gates(), ids=lambda g: g.dist)
def test_installed_version_is_a_checked_one(gate):
    problem = gate.problem()
    assert problem is None, problem


def test_an_unknown_version_fails_loudly_naming_the_module():
    gate = Gate("pydantic", ("0.0.1",), "pipeline.compat.example")
    problem = gate.problem()
    assert problem and "pydantic" in problem and "pipeline.compat.example" in problem and "0.0.1" in problem
    assert "(not installed)" in Gate("no-such-dist-aipc", ("1.0",), "m").problem()


def _params(func) -> set[str]:
    return set(inspect.signature(func).parameters)


@pytest.mark.slow
def test_optimum_intel_private_calls_keep_their_shape():
    from optimum.exporters.openvino.__main__ import _main_quantize
    from optimum.intel import OVModelForCausalLM

    from aipc.pipeline.compat import optimum_intel

    assert {"model_name_or_path", "task", "library_name", "quantization_config", "output", "cache_dir",
            "trust_remote_code"} <= _params(_main_quantize)
    apply = OVModelForCausalLM._apply_quantization
    assert {"quantization_config", "compile_only", "compile_model", "model_name_or_path",
            "trust_remote_code"} <= _params(apply)
    # the keywords it takes through **kwargs go on to OVQuantizer.quantize
    from optimum.intel.openvino.quantization import OVQuantizer

    assert "quantizer.quantize(" in inspect.getsource(apply)
    assert {"save_directory", "immediate_save", "calibration_dataset"} <= _params(OVQuantizer.quantize)
    # the format probe's record: its logger and message are still the ones the filter drops
    probe = sys.modules[optimum_intel.PROBE_LOGGER]
    assert optimum_intel.PROBE_MESSAGE in inspect.getsource(probe)


def test_the_probe_filter_drops_that_record_only(caplog):
    from aipc.pipeline.compat import optimum_intel

    optimum_intel.quiet_offline_format_probe()
    optimum_intel.quiet_offline_format_probe()  # idempotent
    logger = logging.getLogger(optimum_intel.PROBE_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=optimum_intel.PROBE_LOGGER):
        # as optimum-intel logs it: an f-string
        logger.warning(f"{optimum_intel.PROBE_MESSAGE} or not to the OpenVINO IR, keeping `export=False`.\nTypeError")
        logger.warning("Compiling the model to CPU ...")
    assert [r.getMessage() for r in caplog.records] == ["Compiling the model to CPU ..."]


@pytest.mark.slow
def test_nncf_group_size_error_is_recognised():
    from nncf.errors import InvalidGroupSizeError

    from aipc.pipeline.compat import nncf

    assert nncf.is_invalid_group_size(InvalidGroupSizeError("x"))
    assert not nncf.is_invalid_group_size(ValueError("InvalidGroupSizeError"))


@pytest.mark.slow
def test_ortgenai_builder_internals_keep_their_shape():
    from aipc.pipeline.compat import ortgenai_builder

    model = ortgenai_builder.builder_model_class()
    assert model is not None, "the builder no longer imports its classes as the top-level module builders.base"
    assert _params(model.make_layer) == {"self", "layer_id", "layer"}
    assert _params(model.to_nbits) == {"self"}
    assert "ir.to_proto(self.model)" in inspect.getsource(model.to_nbits), \
        "to_nbits no longer hands the float graph over through ir.to_proto(self.model)"
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    assert {"model_name", "input_path", "output_dir", "precision", "execution_provider", "cache_dir",
            "extra_options"} <= _params(parse_extra_options)
    assert len(inspect.signature(create_model).parameters) >= 6
    # the commit it stamps into model.onnx: a classmethod asked by stamp_build_metadata (the_packages_commit)
    assert isinstance(inspect.getattr_static(model, "get_genai_commit"), classmethod)
    assert "rev-parse" in inspect.getsource(model.get_genai_commit)
    assert "cls.get_genai_commit()" in inspect.getsource(model.stamp_build_metadata)
    import onnxruntime_genai

    assert len(onnxruntime_genai.__commit__) == 40


def test_dvc_planner_internals_keep_their_shape():
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    def names(func):
        return list(inspect.signature(func).parameters)

    assert names(collect_stages)[:2] == ["repo", "targets"]
    assert names(get_active_graph) == ["graph"]
    assert names(plan_repro)[:2] == ["graph", "stages"]
