"""The passes of olivine-onnx: their names, options (Olive's) and what they accept.

Light: attrs and the host only. The work lives in :mod:`olivine_onnx.work` and the
surgeons' modules, imported when a pass runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from olivine import ModelHandle, OnnxModel, Pass, PassContext, option
from olivine.config import FieldProblems
from olivine.onnxsave import ExternalDataOptions


def _surgeries(instance: Any, attribute: attrs.Attribute, value: list[dict[str, Any]]) -> None:
    from olivine_onnx.surgeons import surgery_problems

    problems = surgery_problems(value, attribute.name)
    if problems:
        raise FieldProblems(problems)


@attrs.frozen
class GraphSurgeriesConfig(ExternalDataOptions):
    """Options of ``GraphSurgeries``."""

    surgeries: list[dict[str, Any]] = attrs.field(
        validator=_surgeries,
        metadata=option(help="the surgeries, in order: each {\"surgeon\": NAME, ...its options}"))
    remove_duplicate_initializers: bool = attrs.field(
        default=True, metadata=option(help="afterwards, merge initializers with equal type, shape "
                                           "and values into one"))


class _OnnxPass(Pass):
    accepts = ("onnx",)
    produces = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "numpy")
    version = "1"


class GraphSurgeries(_OnnxPass):
    """Apply a list of graph surgeries (Olive's surgeons) to an ONNX model."""

    name = "GraphSurgeries"
    aliases = ("graph_surgeries",)
    Config = GraphSurgeriesConfig

    def run(self, model: ModelHandle, config: GraphSurgeriesConfig,
            context: PassContext) -> OnnxModel:
        """Apply each surgery in turn and save."""
        from olivine_onnx.work import graph_surgeries

        return graph_surgeries(model, config, context)


@attrs.frozen
class PeepholeConfig(ExternalDataOptions):
    """Options of ``OnnxPeepholeOptimizer``."""

    onnxscript_optimize: bool = attrs.field(
        default=True, metadata=option(help="onnxscript's optimizer (constant folding, dead code); "
                                           "without onnxscript installed, olivine's own subset"))
    onnxoptimizer_optimize: bool = attrs.field(
        default=True, metadata=option(help="onnxoptimizer's default passes (when installed; else "
                                           "olivine's own identity and dead-code elimination)"))
    fuse_reshape_operations: bool = attrs.field(
        default=True, metadata=option(help="a Reshape to [-1] right after another Reshape skips it"))
    fix_com_microsoft_opset: bool = attrs.field(
        default=False, metadata=option(help="declare the com.microsoft opset (v1) on the model and "
                                            "its functions"))
    cast_chain_elimination: bool = attrs.field(
        default=False, metadata=option(help="Cast(Cast(x, to=B), to=A) with x of type A -> x"))


class OnnxPeepholeOptimizer(_OnnxPass):
    """Small graph clean-ups: constant folding, identity and dead-code elimination, Reshape and
    Cast chains."""

    name = "OnnxPeepholeOptimizer"
    aliases = ("onnx_peephole_optimizer",)
    Config = PeepholeConfig
    libraries = ("onnx", "numpy", "onnxruntime", "onnxscript", "onnxoptimizer")

    def run(self, model: ModelHandle, config: PeepholeConfig, context: PassContext) -> OnnxModel:
        """Optimize and save."""
        from olivine_onnx.work import peephole

        return peephole(model, config, context)


def _fixed_shape_problems(config: Any) -> list[str]:
    out = []
    if config.dim_param and config.input_name:
        out.append("dim_param: set dim_param/dim_value or input_name/input_shape, not both")
    if not config.dim_param and not config.input_name:
        out.append("dim_param: set dim_param and dim_value, or input_name and input_shape")
    if bool(config.dim_param) != bool(config.dim_value):
        out.append("dim_value: dim_param and dim_value go together")
    elif config.dim_param and len(config.dim_param) != len(config.dim_value):
        out.append(f"dim_value: expected {len(config.dim_param)} values (one per dim_param), "
                   f"got {len(config.dim_value)}")
    elif config.dim_value and any(v < 0 for v in config.dim_value):
        out.append("dim_value: values must be >= 0")
    if bool(config.input_name) != bool(config.input_shape):
        out.append("input_shape: input_name and input_shape go together")
    elif config.input_name and len(config.input_name) != len(config.input_shape):
        out.append(f"input_shape: expected {len(config.input_name)} shapes (one per "
                   f"input_name), got {len(config.input_shape)}")
    elif config.input_shape and any(d <= 0 for s in config.input_shape for d in s):
        out.append("input_shape: dimensions must be > 0")
    return out


@attrs.frozen
class FixedShapeConfig(ExternalDataOptions):
    """Options of ``DynamicToFixedShape``: dim_param/dim_value or input_name/input_shape."""

    dim_param: list[str] | None = attrs.field(
        default=None, metadata=option(help="symbolic dimension names to fix"))
    dim_value: list[int] | None = attrs.field(
        default=None, metadata=option(help="their values, in the same order"))
    input_name: list[str] | None = attrs.field(
        default=None, metadata=option(help="inputs whose whole shape to fix"))
    input_shape: list[list[int]] | None = attrs.field(
        default=None, metadata=option(help="their shapes, in the same order (all > 0)"))

    def __attrs_post_init__(self) -> None:
        problems = _fixed_shape_problems(self)
        if problems:
            raise FieldProblems(problems)


class DynamicToFixedShape(_OnnxPass):
    """Replace symbolic dimensions (by name, or whole input shapes) with fixed sizes."""

    name = "DynamicToFixedShape"
    aliases = ("dynamic_to_fixed_shape",)
    Config = FixedShapeConfig
    libraries = ("onnx", "onnxruntime")

    def run(self, model: ModelHandle, config: FixedShapeConfig, context: PassContext) -> OnnxModel:
        """Fix the shapes and save."""
        from olivine_onnx.work import fixed_shape

        return fixed_shape(model, config, context)


def _elem_type(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    known = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
             8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
             14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}
    if not 1 <= value <= 25:
        raise ValueError(f"{attribute.name}: {value} is not an ONNX tensor type number "
                         f"({', '.join(f'{k}={v}' for k, v in known.items())}, ...)")


@attrs.frozen
class IODataTypeConfig(ExternalDataOptions):
    """Options of ``OnnxIODataTypeConverter``."""

    name_pattern: str = attrs.field(
        default="logits", metadata=option(help="only inputs/outputs whose name matches this regular "
                                               "expression (searched, not anchored)"))
    source_dtype: int = attrs.field(default=10, validator=_elem_type,
                                    metadata=option(help="ONNX type number to convert from (10: float16)"))
    target_dtype: int = attrs.field(default=1, validator=_elem_type,
                                    metadata=option(help="ONNX type number to convert to (1: float)"))

    def __attrs_post_init__(self) -> None:
        import re

        try:
            re.compile(self.name_pattern)
        except re.error as exc:
            raise ValueError(f"name_pattern: not a regular expression: {exc}") from None


class OnnxIODataTypeConverter(_OnnxPass):
    """Graph inputs and outputs of one type get another, with Cast nodes inside the graph."""

    name = "OnnxIODataTypeConverter"
    aliases = ("onnx_io_datatype_converter",)
    Config = IODataTypeConfig

    def run(self, model: ModelHandle, config: IODataTypeConfig, context: PassContext) -> OnnxModel:
        """Convert and save."""
        from olivine_onnx.work import io_datatype

        return io_datatype(model, config, context)


def _opset(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and not 7 <= value <= 30:
        raise ValueError(f"{attribute.name}: expected an ai.onnx opset version, got {value}")


@attrs.frozen
class OpVersionConfig(ExternalDataOptions):
    """Options of ``OnnxOpVersionConversion``."""

    target_opset: int | None = attrs.field(
        default=None, validator=_opset,
        metadata=option(help="ai.onnx opset to convert to (default: the newest the installed onnx "
                             "knows)"))


class OnnxOpVersionConversion(_OnnxPass):
    """Convert the model to another ai.onnx opset version."""

    name = "OnnxOpVersionConversion"
    aliases = ("onnx_op_version_conversion",)
    Config = OpVersionConfig

    def run(self, model: ModelHandle, config: OpVersionConfig, context: PassContext) -> OnnxModel:
        """Convert and save."""
        from olivine_onnx.work import op_version

        return op_version(model, config, context)


@attrs.frozen
class QuantPreprocessConfig(ExternalDataOptions):
    """Options of ``OnnxQuantizationPreprocess``."""

    skip_optimization: bool = attrs.field(
        default=False, metadata=option(help="skip ONNX Runtime's graph optimization step"))
    skip_onnx_shape: bool = attrs.field(default=False,
                                        metadata=option(help="skip ONNX shape inference"))
    skip_symbolic_shape: bool = attrs.field(
        default=False, metadata=option(help="skip ONNX Runtime's symbolic shape inference"))


class OnnxQuantizationPreprocess(_OnnxPass):
    """ONNX Runtime's quantization pre-processing: optimization and shape inference."""

    name = "OnnxQuantizationPreprocess"
    aliases = ("onnx_quantization_preprocess",)
    Config = QuantPreprocessConfig
    libraries = ("onnx", "onnxruntime")

    def run(self, model: ModelHandle, config: QuantPreprocessConfig,
            context: PassContext) -> OnnxModel:
        """Pre-process and save."""
        from olivine_onnx.work import quant_preprocess

        return quant_preprocess(model, config, context)


@attrs.frozen
class MetadataConfig(ExternalDataOptions):
    """Options of ``AddOliveMetadata``."""

    graph_name: str = attrs.field(metadata=option(help="the ONNX graph's new name (required)"))
    custom_metadata: dict[str, Any] = attrs.field(
        factory=dict, metadata=option(help="key-value pairs added to the model's metadata_props "
                                           "(values written as text)"))
    add_optimization_info: bool = attrs.field(
        default=True, metadata=option(help="also record what is known of the optimizations "
                                           "(from the model's attributes)"))


class AddOliveMetadata(_OnnxPass):
    """Name the graph and add metadata (custom pairs, version, model hash) to the model."""

    name = "AddOliveMetadata"
    aliases = ("add_olive_metadata",)
    Config = MetadataConfig

    def run(self, model: ModelHandle, config: MetadataConfig, context: PassContext) -> OnnxModel:
        """Add the metadata and save."""
        from olivine_onnx.work import add_metadata

        return add_metadata(model, config, context)


def _all_passes() -> tuple[type[Pass], ...]:
    from olivine_onnx.pipeline_passes import ALL as PIPELINE_PASSES
    from olivine_onnx.session_pass import OrtSessionParamsTuning

    return (GraphSurgeries, OnnxPeepholeOptimizer, DynamicToFixedShape, OnnxIODataTypeConverter,
            OnnxOpVersionConversion, OnnxQuantizationPreprocess, AddOliveMetadata,
            OrtSessionParamsTuning, *PIPELINE_PASSES)


ALL_PASSES: tuple[type[Pass], ...] = _all_passes()
