"""Options of the weight-quantization passes (Olive's names), with their checks.

This module is imported by ``olivine passes`` and config validation, so it imports
nothing heavy.
"""

from __future__ import annotations

from typing import Any

import attrs

from olivine import option

OP_TYPES = ("MatMul", "Gather")


def _bits(instance: Any, attribute: Any, value: int) -> None:
    if value not in (4, 8):
        raise ValueError(f"{attribute.name}: expected 4 or 8, got {value} (ONNX Runtime's MatMulNBits "
                         "kernels and the genai builder's loaders run 4- and 8-bit weights)")


def _optional_bits(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None:
        _bits(instance, attribute, value)


def _block(instance: Any, attribute: Any, value: int) -> None:
    if not 16 <= value <= 256 or value & (value - 1):
        raise ValueError(f"{attribute.name}: expected a power of two from 16 to 256 (16, 32, 64, 128 "
                         f"or 256), got {value}; MatMulNBits runs no other block sizes")


def _group(instance: Any, attribute: Any, value: int) -> None:
    """A Hugging Face pass's ``group_size``: a MatMulNBits block size, or -1 (one block per row)."""
    if value != -1:
        _block(instance, attribute, value)


def _accuracy(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and not 0 <= value <= 4:
        raise ValueError(f"accuracy_level: expected 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 "
                         f"(int8), got {value}")


def _op_types(instance: Any, attribute: Any, value: list[str]) -> None:
    bad = [v for v in value if v not in OP_TYPES]
    if bad or not value:
        raise ValueError(f"op_types_to_quantize: expected a non-empty list of {', '.join(OP_TYPES)}, "
                         f"got {value}")


def _axis(instance: Any, attribute: Any, value: int) -> None:
    if value != 0:
        raise ValueError(f"axis: only 0 (blocks along the weight's input dimension, as MatMulNBits "
                         f"needs) is supported, got {value}")


def _positive(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name}: expected at least 1, got {value}")


def _seq(instance: Any, attribute: Any, value: int) -> None:
    if value < 8:
        raise ValueError(f"max_seq_len: expected at least 8 tokens, got {value}")


def _damp(instance: Any, attribute: Any, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"damp_percent: expected a fraction in (0, 1], got {value}")


OVERRIDE_KEYS = ("bits", "symmetric", "group_size")


def _overrides(instance: Any, attribute: Any, value: dict[str, Any] | None) -> None:
    """Olive's ``overrides``: module name -> any of bits, symmetric, group_size."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"overrides: expected an object of module name -> settings, got {value!r}")
    for module, override in value.items():
        where = f"overrides.{module}"
        if not isinstance(override, dict):
            raise ValueError(f"{where}: expected an object with {', '.join(OVERRIDE_KEYS)}, "
                             f"got {override!r}")
        for key, item in override.items():
            if key not in OVERRIDE_KEYS:
                raise ValueError(f"{where}.{key}: unknown override; Olive's overrides take "
                                 f"{', '.join(OVERRIDE_KEYS)}")
            if item is None:
                continue
            if key == "bits" and item not in (4, 8):
                raise ValueError(f"{where}.bits: expected 4 or 8, got {item!r}")
            if key == "group_size" and (not isinstance(item, int) or isinstance(item, bool)
                                        or (item != -1 and (not 16 <= item <= 256 or item & (item - 1)))):
                raise ValueError(f"{where}.group_size: expected a power of two from 16 to 256 or -1 "
                                 f"(one block per row), got {item!r} (MatMulNBits runs no other "
                                 "block sizes)")
            if key == "symmetric" and not isinstance(item, bool):
                raise ValueError(f"{where}.symmetric: expected true or false, got {item!r}")


# -- ONNX -----------------------------------------------------------------------------------------


@attrs.frozen
class OnnxRtnConfig:
    """Options of ``OnnxBlockWiseRtnQuantization``."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    block_size: int = attrs.field(default=128, validator=_block, metadata=option(
        help="weights per block along K (16, 32, 64, 128, 256); K need not be a multiple"))
    is_symmetric: bool = attrs.field(default=True, metadata=option(
        help="symmetric blocks (no zero points); false stores a zero point per block",
        aliases=("symmetric", "sym")))
    accuracy_level: int | None = attrs.field(default=None, validator=_accuracy, metadata=option(
        help="MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (null: the kernel's default)"))
    axis: int = attrs.field(default=0, validator=_axis, metadata=option(help="accepted for Olive; only 0"))
    op_types_to_quantize: list[str] = attrs.field(factory=lambda: ["MatMul"], validator=_op_types,
                                                  metadata=option(
        help="MatMul (-> MatMulNBits) and/or Gather (embedding tables -> GatherBlockQuantized)"))
    nodes_to_include: list[str] = attrs.field(factory=list, metadata=option(
        help="only these node names (empty: every eligible node)"))
    nodes_to_exclude: list[str] = attrs.field(factory=list, metadata=option(
        help="node names to leave in float (for example /lm_head/MatMul)"))
    save_as_external_data: bool = attrs.field(default=True, metadata=option(
        help="accepted for Olive; weights are always written to one external data file"))
    all_tensors_to_one_file: bool = attrs.field(default=True, metadata=option(help="accepted for Olive"))
    external_data_name: str | None = attrs.field(default=None, metadata=option(help="accepted for Olive"))
    size_threshold: int = attrs.field(default=1024, metadata=option(help="accepted for Olive"))
    convert_attribute: bool = attrs.field(default=False, metadata=option(help="accepted for Olive"))


@attrs.frozen
class OnnxHqqConfig:
    """Options of ``OnnxHqqQuantization``."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    block_size: int = attrs.field(default=32, validator=_block, metadata=option(
        help="weights per block along K (16, 32, 64, 128, 256); 32 by default, where HQQ "
             "measured better than RTN (at 128 it did not; Olive's default is 128)"))
    accuracy_level: int | None = attrs.field(default=None, validator=_accuracy, metadata=option(
        help="MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (null: the kernel's default)"))
    axis: int = attrs.field(default=0, validator=_axis, metadata=option(help="accepted for Olive; only 0"))
    iterations: int = attrs.field(default=20, validator=_positive, metadata=option(
        help="proximal-solver iterations per block (stops early when the error stops falling)"))
    nodes_to_include: list[str] = attrs.field(factory=list, metadata=option(
        help="only these node names (empty: every MatMul with a constant weight)"))
    nodes_to_exclude: list[str] = attrs.field(factory=list, metadata=option("node names to leave in float"))
    save_as_external_data: bool = attrs.field(default=True, metadata=option(help="accepted for Olive"))
    all_tensors_to_one_file: bool = attrs.field(default=True, metadata=option(help="accepted for Olive"))
    external_data_name: str | None = attrs.field(default=None, metadata=option(help="accepted for Olive"))
    size_threshold: int = attrs.field(default=1024, metadata=option(help="accepted for Olive"))
    convert_attribute: bool = attrs.field(default=False, metadata=option(help="accepted for Olive"))


# -- Hugging Face ---------------------------------------------------------------------------------


@attrs.frozen
class HfWeightConfig:
    """Options shared by the passes that write GPTQ-format Hugging Face folders (Olive's
    ``get_quantizer_config``: bits, group_size, sym, lm_head, overrides)."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    group_size: int = attrs.field(default=128, validator=_group, metadata=option(
        help="weights per block (16, 32, 64, 128, 256; it must divide every quantized layer's "
             "input size), or -1: one block per row, for layers whose input size is a power of "
             "two (MatMulNBits runs no other block sizes)", aliases=("block_size",)))
    sym: bool = attrs.field(default=False, metadata=option(
        help="symmetric blocks; false (Olive's default) fits a zero point per block",
        aliases=("symmetric", "is_symmetric")))
    lm_head: bool = attrs.field(default=False, metadata=option(
        help="also quantize the LM head (untied from the embeddings if they were shared)"))
    lm_head_bits: int | None = attrs.field(default=None, validator=_optional_bits, metadata=option(
        help="bits for the LM head (null: bits, or its entry in overrides); olivine's "
             "shorthand for overrides {\"lm_head\": {\"bits\": N}}"))
    overrides: dict[str, Any] | None = attrs.field(default=None, validator=_overrides, metadata=option(
        help="per module name (lm_head, model.embed_tokens, model.layers.0.mlp.down_proj, ...): "
             "any of bits, symmetric, group_size; they take precedence over the input's "
             "mixed-precision choice (SelectiveMixedPrecision), as in Olive"))


@attrs.frozen
class RtnHfConfig(HfWeightConfig):
    """Options of ``Rtn`` (Olive's Hugging Face-side round-to-nearest)."""

    embeds: bool = attrs.field(default=False, metadata=option(
        help="also quantize the input embeddings (untied from the LM head if they were "
             "shared); ModelBuilder turns them into GatherBlockQuantized"))
    only_lm_head: bool = attrs.field(default=False, metadata=option(
        help="on a GPTQ-format input only the LM head is quantized anyway (the genai builder "
             "reads every decoder-layer linear of a quantized checkpoint as quantized, so a "
             "float input cannot keep them in float); implies lm_head"))


@attrs.frozen(slots=False)  # a mixin: slotted bases on both sides of a class cannot combine
class CalibrationFields:
    """Where calibration text comes from and how much of it (GPTQ and AWQ, torch or ONNX)."""

    data_config: str | None = attrs.field(default=None, metadata=option(
        data_config=True, help="name of a workflow data_configs entry with calibration text"))
    data_files: list[str] = attrs.field(factory=list, metadata=option(
        input_path=True, help="local calibration files: .txt, .jsonl, .json, .csv, .tsv or .parquet"))
    data_name: str | None = attrs.field(default=None, metadata=option(
        help="a Hugging Face hub dataset id for calibration text (needs datasets and network)",
        aliases=("dataset",)))
    data_subset: str | None = attrs.field(default=None, metadata=option(help="the dataset's subset"))
    data_split: str = attrs.field(default="train", metadata=option(help="the dataset's split"))
    text_field: str = attrs.field(default="text", metadata=option(
        help="the field (column) holding the text in jsonl, json, csv and parquet files"))
    max_samples: int = attrs.field(default=128, validator=_positive, metadata=option(
        help="calibration windows", aliases=("nsamples",)))
    max_seq_len: int = attrs.field(default=512, validator=_seq, metadata=option(
        help="tokens per calibration window", aliases=("seqlen",)))
    seed: int = attrs.field(default=0, metadata=option(help="shuffles the records of multi-record files"))


@attrs.frozen
class CalibratedConfig(CalibrationFields, HfWeightConfig):
    """Options shared by GPTQ and AWQ: the weights' options plus the calibration data."""


@attrs.frozen
class GptqConfig(CalibratedConfig):
    """Options of ``Gptq``."""

    damp_percent: float = attrs.field(default=0.01, validator=_damp, metadata=option(
        help="damping added to the Hessian's diagonal, as a fraction of its mean"))
    desc_act: bool | None = attrs.field(default=None, metadata=option(
        help="act-order: quantize columns by decreasing activation energy (each column keeps its "
             "block's scale, so no g_idx is needed); null means true for group_size -1 and false "
             "otherwise, as in Olive", aliases=("act_order",)))


@attrs.frozen
class AwqConfig(CalibratedConfig):
    """Options of ``Awq``."""

    grid: int = attrs.field(default=20, validator=_positive, metadata=option(
        help="scaling exponents tried per group of linears (0, 1/grid, ..., 1)"))


def _unset(why: str) -> Any:
    """A validator refusing any value but the default ``None`` (an option olivine cannot apply)."""
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            raise ValueError(f"{attribute.name}: {why}")
    return check


@attrs.frozen
class GptqQuantizerConfig(CalibrationFields):
    """Options of Olive's ``GptqQuantizer`` (AutoGPTQ), run by olivine's GPTQ."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    group_size: int = attrs.field(default=128, validator=_group, metadata=option(
        help="weights per block (16, 32, 64, 128, 256), or -1 (one block per row)"))
    sym: bool = attrs.field(default=False, metadata=option(help="symmetric blocks"))
    damp_percent: float = attrs.field(default=0.01, validator=_damp, metadata=option(
        help="damping added to the Hessian's diagonal, as a fraction of its mean"))
    desc_act: bool = attrs.field(default=False, metadata=option(
        help="act-order; olivine always keeps static groups (plain g_idx), which the genai "
             "builder's loader needs"))
    static_groups: bool = attrs.field(default=False, metadata=option(
        help="accepted: olivine's act-order always uses static groups"))
    true_sequential: bool = attrs.field(default=False, metadata=option(
        help="quantize a layer's linears group by group (attention inputs, attention output, MLP "
             "inputs, MLP output), each from inputs that went through the groups already "
             "quantized; false: all from one pass of calibration inputs"))
    layers_block_name: str | None = attrs.field(default=None, validator=_unset(
        "olivine finds the decoder layers from the transformers model; remove this option"),
        metadata=option(help="not supported (olivine finds the decoder layers itself)"))
    outside_layer_modules: list[str] | None = attrs.field(default=None, validator=_unset(
        "olivine finds the modules outside the decoder layers itself; remove this option"),
        metadata=option(help="not supported (olivine finds them itself)"))
    inside_layer_modules: list[list[str]] | None = attrs.field(default=None, validator=_unset(
        "olivine quantizes every linear inside each decoder layer; remove this option"),
        metadata=option(help="not supported (every linear of each decoder layer is quantized)"))


@attrs.frozen
class GptqModelConfig(CalibrationFields):
    """Options of Olive's ``GptqModel`` (the gptqmodel package), run by olivine's GPTQ."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    group_size: int = attrs.field(default=-1, validator=_group, metadata=option(
        help="weights per block (16, 32, 64, 128, 256), or -1 (GPTQModel's default: one block "
             "per row, for layers whose input size is a power of two)"))
    damp_percent: float = attrs.field(default=0.05, validator=_damp, metadata=option(
        help="damping added to the Hessian's diagonal, as a fraction of its mean"))
    damp_auto_increment: float = attrs.field(default=0.01, metadata=option(
        help="accepted: olivine's Cholesky step raises the damping itself when it fails"))
    static_groups: bool = attrs.field(default=False, metadata=option(
        help="accepted: olivine's act-order always uses static groups"))
    true_sequential: bool = attrs.field(default=True, metadata=option(
        help="quantize a layer's linears group by group, each from inputs that went through "
             "the groups already quantized"))
    desc_act: bool = attrs.field(default=True, metadata=option(help="act-order (static groups)"))
    sym: bool = attrs.field(default=True, metadata=option(help="symmetric blocks"))
    mse: float = attrs.field(default=0.0, metadata=option(
        help="0 only: olivine's RTN grid search is fixed (no MSE norm option)"))
    lm_head: bool = attrs.field(default=False, metadata=option(help="also quantize the LM head"))
    device: str = attrs.field(default="cpu", metadata=option(help="cpu only: olivine's GPTQ runs on the CPU"))
    dynamic: dict[str, Any] | None = attrs.field(default=None, validator=_unset(
        "GPTQModel's regex overrides are not supported; use the Gptq pass's overrides (per module "
        "name)"), metadata=option(help="not supported: use Gptq's overrides"))
    rotation: str | None = attrs.field(default=None, validator=_unset(
        "rotation is not supported here; run a QuaRot pass before Gptq"),
        metadata=option(help="not supported: rotate with a QuaRot pass"))
    def __attrs_post_init__(self) -> None:
        problems = []
        if self.mse:
            problems.append(f"mse: {self.mse} is not supported (olivine's scale search is fixed); set 0")
        if self.device != "cpu":
            problems.append(f"device: {self.device!r}: olivine's GPTQ runs on the CPU; set \"cpu\"")
        if problems:
            raise ValueError("; ".join(problems))


def calibration_problems(config: CalibrationFields, default_allowed: bool = False) -> list[str]:
    """What is wrong with the calibration fields before anything runs.

    ``default_allowed``: no source at all is fine (Olive's Gptq then calibrates on its
    default hub dataset; :func:`olivine_weightquant.passes.calibration_source`).
    """
    given = [n for n, v in (("data_config", config.data_config), ("data_files", config.data_files),
                            ("data_name", config.data_name)) if v]
    if not given and not default_allowed:
        return ["data_config: calibration data is needed: set data_config (a data_configs entry), "
                "data_files (local text files) or data_name (a hub dataset)"]
    if len(given) > 1:
        return [f"{given[1]}: give one calibration source, not both {given[0]} and {given[1]}"]
    return []


@attrs.frozen(slots=False)
class _OnnxGptqWeights:
    """The weight options of ``OnnxGptqQuantization`` (listed before the calibration ones)."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    block_size: int = attrs.field(default=128, validator=_block, metadata=option(
        help="weights per block along K (16, 32, 64, 128, 256)", aliases=("group_size",)))
    is_symmetric: bool = attrs.field(default=False, metadata=option(
        help="symmetric blocks; false fits a zero point per block", aliases=("symmetric", "sym")))
    accuracy_level: int | None = attrs.field(default=None, validator=_accuracy, metadata=option(
        help="MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (null: the kernel's default)"))
    damp_percent: float = attrs.field(default=0.01, validator=_damp, metadata=option(
        help="damping added to the Hessian's diagonal, as a fraction of its mean"))
    act_order: bool = attrs.field(default=False, metadata=option(
        help="quantize columns by decreasing activation energy (static groups, no g_idx)",
        aliases=("desc_act", "actorder")))
    hessian_memory_mb: int = attrs.field(default=1024, validator=_positive, metadata=option(
        help="memory for Hessians at once; more activations per calibration pass, fewer passes"))
    nodes_to_include: list[str] = attrs.field(factory=list, metadata=option(
        help="only these MatMul node names (empty: every MatMul with a constant weight)"))
    nodes_to_exclude: list[str] = attrs.field(factory=list, metadata=option(
        help="node names to leave in float (for example /lm_head/MatMul)"))


@attrs.frozen
class OnnxGptqConfig(CalibrationFields, _OnnxGptqWeights):
    """Options of ``OnnxGptqQuantization``: GPTQ on an ONNX model's MatMul weights."""
