"""The surgeons of ``GraphSurgeries``: their names, options and where their code lives.

Each surgeon is a function ``apply(model: onnx.ModelProto, options) -> onnx.ModelProto`` in one of
the modules beside this one, and an attrs class of its options (Olive's names and defaults).
This module is light (attrs only): the workflow validator reads it; the modules holding the
surgeries import onnx and numpy and are imported when the pass runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from olivine import option


@attrs.frozen
class NoOptions:
    """A surgeon without options."""


@attrs.frozen
class RenameNames:
    """``old_names[i]`` becomes ``new_names[i]``."""

    old_names: list[str] = attrs.field(metadata=option(help="names to rename"))
    new_names: list[str] = attrs.field(metadata=option(help="their new names, in the same order"))

    def __attrs_post_init__(self) -> None:
        if len(self.old_names) != len(self.new_names):
            raise ValueError(f"new_names: expected {len(self.old_names)} names (one per "
                             f"old_names entry), got {len(self.new_names)}")


def _not_negative(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name}: expected an index >= 0, got {value}")


@attrs.frozen
class RenameOutputDimsOptions:
    """Options of ``RenameOutputDims``."""

    output_idx: int = attrs.field(validator=_not_negative, metadata=option(help="which output"))
    dim_idx: int = attrs.field(validator=_not_negative, metadata=option(help="which dimension"))
    dim_name: str = attrs.field(metadata=option(help="the dimension's new symbolic name"))


@attrs.frozen
class RenameInputDimsOptions:
    """Options of ``RenameInputDims``: the input by ``input_name`` or ``input_idx``."""

    dim_idx: int = attrs.field(validator=_not_negative, metadata=option(help="which dimension"))
    dim_name: str = attrs.field(metadata=option(help="the dimension's new symbolic name"))
    input_name: str | None = attrs.field(default=None, metadata=option(help="the input, by name"))
    input_idx: int | None = attrs.field(default=None, validator=_not_negative,
                                        metadata=option(help="the input, by position"))

    def __attrs_post_init__(self) -> None:
        if self.input_name is None and self.input_idx is None:
            raise ValueError("input_name: set input_name or input_idx")


@attrs.frozen
class ReorderInputsOptions:
    """Options of ``ReorderInputs``."""

    permutation: list[int] = attrs.field(
        metadata=option(help="new order of the inputs, as indices into the current order"))


@attrs.frozen
class RemoveRopeMultiCacheOptions:
    """Options of ``RemoveRopeMultiCache``."""

    use_large_cache: bool = attrs.field(
        default=False, metadata=option(help="keep the large rotary cache (else the small one)"))


@attrs.frozen
class ReplaceAttentionMaskValueOptions:
    """Options of ``ReplaceAttentionMaskValue``."""

    threshold: float = attrs.field(default=-3e30,
                                   metadata=option(help="mask values below this are replaced"))
    replacement: float = attrs.field(default=-1e4, metadata=option(help="the new mask value"))


@attrs.frozen
class ZeroOutInputOptions:
    """Options of ``ZeroOutInput``."""

    node_name: str = attrs.field(metadata=option(help="the node whose input is zeroed"))
    input_idx: int = attrs.field(validator=_not_negative, metadata=option(help="which input"))


@attrs.frozen
class NamesOptions:
    """A list of names (graph inputs for ``RemoveInputs``, nodes for ``ExposeOutputs``)."""

    names: list[str] = attrs.field(metadata=option(help="the names"))


@attrs.frozen
class IntermediateTensorsOptions:
    """Options of ``AddIntermediateTensorsToOutputs``."""

    intermediate_tensor_to_add: list[str] | None = attrs.field(
        default=None, metadata=option(help="tensors to expose (default: every node output)"))


@attrs.frozen
class RemoveQDQOptions:
    """Options of ``RemoveQDQ``."""

    keep_clip_after_inputs: bool = attrs.field(
        default=False, metadata=option(help="a pair right after a graph input becomes a Clip to "
                                            "its range"))


@attrs.frozen
class ExposeQuantizedOutputOptions:
    """Options of ``ExposeQuantizedOutput``."""

    output_name: str = attrs.field(metadata=option(help="the graph output made by Q -> DQ"))


@attrs.frozen
class Surgeon:
    """One entry of the catalogue: its name, options class and ``module:function``."""

    name: str
    options: type
    where: str
    doc: str

    def function(self) -> Callable[[Any, Any], Any]:
        """The surgery itself (imports its module, which imports onnx)."""
        module, _, func = self.where.partition(":")
        return getattr(importlib.import_module(f"olivine_onnx.surgeons.{module}"), func)


_ENTRIES: list[tuple[str, type, str, str]] = [
    # name, options, module:function, one line
    ("RenameInputs", RenameNames, "io:rename_inputs", "rename graph inputs everywhere they are read"),
    ("RenameOutputs", RenameNames, "io:rename_outputs", "rename graph outputs"),
    ("RenameInputDims", RenameInputDimsOptions, "io:rename_input_dims",
     "give an input dimension a symbolic name"),
    ("RenameOutputDims", RenameOutputDimsOptions, "io:rename_output_dims",
     "give an output dimension a symbolic name"),
    ("ReorderInputs", ReorderInputsOptions, "io:reorder_inputs", "reorder the graph inputs"),
    ("InferShapes", NoOptions, "io:infer_shapes", "ONNX shape inference"),
    ("RemoveShapes", NoOptions, "io:remove_shapes", "drop the recorded intermediate shapes"),
    ("RemoveInitializerFromInputs", NoOptions, "io:remove_initializer_from_inputs",
     "initializers listed as graph inputs stop being inputs"),
    ("GemmToMatMulAdd", NoOptions, "linear:gemm_to_matmul_add", "Gemm -> MatMul (+ Add)"),
    ("MatMulAddToGemm", NoOptions, "linear:matmul_add_to_gemm", "MatMul + Add -> Gemm"),
    ("ReciprocalMulToDiv", NoOptions, "linear:reciprocal_mul_to_div",
     "Mul(a, Reciprocal(x)) -> Div(a, x)"),
    ("PowReduceSumPowDiv2LpNorm", NoOptions, "linear:pow_reducesum_pow_div_to_lpnorm",
     "x / sqrt(sum(x^2)) -> LpNormalization(p=2)"),
    ("SimplifiedLayerNormToL2Norm", NoOptions, "linear:simplified_layernorm_to_l2norm",
     "(Skip)SimplifiedLayerNormalization -> LpNormalization * sqrt(N) * weight"),
    ("TieWordEmbeddings", NoOptions, "llm:tie_word_embeddings",
     "the LM head reuses the embedding weight when they are equal"),
    ("RemoveRopeMultiCache", RemoveRopeMultiCacheOptions, "llm:remove_rope_multi_cache",
     "one rotary cache instead of an If choosing between two"),
    ("AttentionMaskToSequenceLengths", NoOptions, "llm:attention_mask_to_sequence_lengths",
     "GroupQueryAttention reads past_seq_len/total_seq_len inputs, not attention_mask"),
    ("ReplaceAttentionMaskValue", ReplaceAttentionMaskValueOptions,
     "llm:replace_attention_mask_value", "replace very negative mask constants"),
    ("RemoveGidxFromMatMulNBits", NoOptions, "llm:remove_gidx_from_matmulnbits",
     "drop trivial g_idx inputs of MatMulNBits"),
    ("QuantizeEmbeddingInt8", NoOptions, "llm:quantize_embedding_int8",
     "embed_tokens Gather -> int8 GatherBlockQuantized (block 32)"),
    ("ShareEmbeddingLmHead", NoOptions, "llm:share_embedding_lm_head",
     "lm_head MatMulNBits reads the int8 embedding weight"),
    ("DeduplicateSubgraphInitializers", NoOptions, "cleanup:dedupe_subgraph_initializers",
     "drop repeated initializer names in Loop/If/Scan bodies"),
    ("DeduplicateNodes", NoOptions, "cleanup:dedupe_nodes",
     "drop nodes that produce a tensor already produced"),
    ("RemoveMemcpy", NoOptions, "cleanup:remove_memcpy", "drop MemcpyToHost/MemcpyFromHost"),
    ("PackedAttentionToLoopMHA", NoOptions, "attention:packed_attention_to_loop_mha",
     "custom::PackedAttention -> a Loop of MultiHeadAttention over segments"),
    ("DecomposeRotaryEmbedding", NoOptions, "attention:decompose_rotary_embedding",
     "com.microsoft RotaryEmbedding -> Gather of the caches and the rotation in primitive ops"),
    ("ReplaceErfWithTanh", NoOptions, "misc:replace_erf_with_tanh",
     "Erf(x) -> Tanh(x * 605/503), an approximation within 0.02"),
    ("DecomposeQuickGelu", NoOptions, "misc:decompose_quick_gelu",
     "QuickGelu(x) -> x * Sigmoid(alpha * x)"),
    ("ZeroOutInput", ZeroOutInputOptions, "misc:zero_out_input",
     "one input of a node reads zeros of its shape"),
    ("RemoveInputs", NamesOptions, "misc:remove_inputs",
     "drop graph inputs (nodes stop reading them)"),
    ("ExposeOutputs", NamesOptions, "misc:expose_outputs",
     "the first output of the named nodes becomes a graph output"),
    ("AddIntermediateTensorsToOutputs", IntermediateTensorsOptions,
     "misc:add_intermediate_tensors_to_outputs", "intermediate tensors become graph outputs"),
    ("RMSNormToL2Norm", NoOptions, "norm:rmsnorm_to_l2norm",
     "Pow/ReduceMean/Add/Sqrt/Div RMSNorm -> LpNormalization * (weight * sqrt(N))"),
    ("SimplifiedLayerNormToRMSNorm", NoOptions, "norm:simplified_layernorm_to_rmsnorm",
     "(Skip)SimplifiedLayerNormalization -> Pow/ReduceMean/Add/Sqrt/Div/Mul"),
    ("RemoveQDQ", RemoveQDQOptions, "qdq:remove_qdq",
     "QuantizeLinear -> DequantizeLinear pairs removed"),
    ("QDQToClip", NoOptions, "qdq:qdq_to_clip", "QuantizeLinear -> DequantizeLinear pairs -> Clip"),
    ("ExposeQuantizedOutput", ExposeQuantizedOutputOptions, "qdq:expose_quantized_output",
     "a Q -> DQ graph output given quantized, with its scale and zero point"),
    ("RemoveDeqLin", NoOptions, "qdq:remove_deqlin",
     "DequantizeLinear of constants folded into float initializers"),
    ("RemoveAllTensorValueShapes", NoOptions, "misc:remove_all_tensor_value_shapes",
     "clear the shapes of intermediate value infos"),
]

#: Every surgeon by its lower-case name (Olive matches surgeon names case-insensitively).
SURGEONS: dict[str, Surgeon] = {
    name.lower(): Surgeon(name, options, where, doc) for name, options, where, doc in _ENTRIES}


def known_names() -> list[str]:
    """The surgeon names, as Olive spells them."""
    return [s.name for s in SURGEONS.values()]


def surgery_problems(surgeries: list[dict[str, Any]], field: str = "surgeries") -> list[str]:
    """Every problem of a ``surgeries`` list, each as ``"surgeries[i].key: message"``."""
    from olivine import did_you_mean
    from olivine.config import Problems, structure

    problems = Problems()
    for i, entry in enumerate(surgeries):
        where = f"{field}[{i}]"
        name = entry.get("surgeon")
        if not isinstance(name, str) or not name:
            problems.add(f"{where}.surgeon", "required key is missing: the surgeon's name (one "
                                             f"of {', '.join(known_names())})")
            continue
        surgeon = SURGEONS.get(name.lower())
        if surgeon is None:
            problems.add(f"{where}.surgeon", f"unknown surgeon {name!r}"
                         f"{did_you_mean(name, known_names())}; known: {', '.join(known_names())}")
            continue
        rest = {k: v for k, v in entry.items() if k != "surgeon"}
        structure(rest, surgeon.options, where, problems)
    return problems.items


def build(entry: dict[str, Any]) -> tuple[Surgeon, Any]:
    """The surgeon and its options object for one validated ``surgeries`` entry."""
    from olivine.config import Problems, is_missing, structure

    surgeon = SURGEONS[str(entry["surgeon"]).lower()]
    problems = Problems()
    options = structure({k: v for k, v in entry.items() if k != "surgeon"}, surgeon.options,
                        "", problems)
    if is_missing(options):
        raise ValueError("; ".join(problems.items))
    return surgeon, options
