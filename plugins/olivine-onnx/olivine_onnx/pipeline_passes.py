"""Passes over model parts: ``CaptureSplitInfo``, ``SplitModel``, ``ComposeOnnxModels`` and
``StaticLLM`` (Olive's names, options and defaults). Light: attrs and the host only."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from olivine import Accelerator, CompositeModel, HfModel, ModelHandle, OnnxModel, Pass, PassContext, option
from olivine.onnxsave import ExternalDataOptions


def _positive(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{attribute.name}: expected a number >= 1, got {value!r}")


@attrs.frozen
class CaptureSplitInfoConfig:
    """Options of ``CaptureSplitInfo``: ``num_splits`` or ``cost_model``."""

    num_splits: int | None = attrs.field(
        default=None, validator=_positive,
        metadata=option(help="divide the children of block_to_split into this many splits"))
    block_to_split: str | list[str] | None = attrs.field(
        default=None, metadata=option(help="module(s) whose children are split (default: the "
                                           "transformer layers; \"\" is the model itself)"))
    cost_model: str | None = attrs.field(
        default=None, metadata=option(input_path=True, help="CSV of module,num_params,num_bytes,"
                                "num_flops per leaf module; splits so each fits in memory"))
    unique_embeds_lm_head_splits: bool = attrs.field(
        default=False, metadata=option(help="the embeddings and the LM head get splits of their own"))
    memory: int | None = attrs.field(
        default=None, validator=_positive,
        metadata=option(help="olivine: the accelerator's memory in bytes, for cost_model (Olive "
                             "reads it from the system's accelerators)"))

    def __attrs_post_init__(self) -> None:
        if self.num_splits is None and self.cost_model is None:
            raise ValueError("num_splits: set num_splits or cost_model")
        if self.cost_model is not None and self.memory is None:
            raise ValueError("memory: cost_model needs the accelerator's memory in bytes")


class CaptureSplitInfo(Pass):
    """Decide which split each transformer block goes to; records ``split_assignments`` on the
    model (the ONNX conversion writes it into the model's metadata for ``SplitModel``)."""

    name = "CaptureSplitInfo"
    aliases = ("capture_split_info",)
    Config = CaptureSplitInfoConfig
    accepts = ("hf",)
    produces = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    version = "1"

    def run(self, model: ModelHandle, config: CaptureSplitInfoConfig,
            context: PassContext) -> HfModel:
        """Compute the assignments (needs torch and transformers)."""
        from olivine_onnx.capture import capture_split_info

        return capture_split_info(model, config, context)


@attrs.frozen
class SplitModelConfig(ExternalDataOptions):
    """Options of ``SplitModel``."""

    split_assignments: dict[str, int] | str | None = attrs.field(
        default=None, metadata=option(help="module name -> split, as a mapping or \"name1=0;name2=1\" "
                                           "(default: the model's split_assignments metadata)"))

    def __attrs_post_init__(self) -> None:
        if isinstance(self.split_assignments, str):
            from olivine import UsageError
            from olivine_onnx.split import parse_assignments

            try:
                parse_assignments(self.split_assignments)
            except UsageError as exc:
                raise ValueError(str(exc)) from None


class SplitModel(Pass):
    """Split an ONNX model into a chain of parts (a composite model ``split_0``, ``split_1``,
    ...) by the split assignments of its nodes' module names."""

    name = "SplitModel"
    aliases = ("split_model",)
    Config = SplitModelConfig
    accepts = ("onnx",)
    produces = "composite"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    version = "1"

    def run(self, model: ModelHandle, config: SplitModelConfig,
            context: PassContext) -> CompositeModel:
        """Split and save the parts."""
        from olivine_onnx.split import split_model

        return split_model(model, config, context)


@attrs.frozen
class ComposeConfig(ExternalDataOptions):
    """Options of ``ComposeOnnxModels`` (Olive's external-data options only)."""


class ComposeOnnxModels(Pass):
    """Chain the ONNX parts of a composite model into one model: each part's outputs feed the
    later parts' inputs of the same name."""

    name = "ComposeOnnxModels"
    aliases = ("compose_onnx_models",)
    Config = ComposeConfig
    accepts = ("composite",)
    produces = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx",)
    version = "1"

    def run(self, model: ModelHandle, config: ComposeConfig, context: PassContext) -> OnnxModel:
        """Compose and save."""
        from olivine_onnx.split import compose_models

        return compose_models(model, config, context)


@attrs.frozen
class StaticLLMConfig:
    """Options of ``StaticLLM``."""

    batch_size: int = attrs.field(default=1, validator=_positive,
                                  metadata=option(help="the fixed batch size"))
    context_length: int = attrs.field(
        default=64, validator=_positive,
        metadata=option(help="the fixed input length of the context (prompt) model, and the "
                             "sliding window of onnxruntime-genai"))
    group_session_options: dict[str, Any] | None = attrs.field(
        default=None, metadata=option(help="session options of the context and iterator models "
                                           "in genai_config.json (composite input only)"))


class StaticLLM(Pass):
    """Give an LLM fixed shapes (Olive's QNN GPU form): input_ids becomes [batch_size,
    context_length] and genai_config.json a one-model pipeline with a sliding window. Olive's
    composite form (context and iterator models) is not supported yet."""

    name = "StaticLLM"
    aliases = ("static_llm",)
    Config = StaticLLMConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    version = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """The single-model form is Olive's QNN GPU path; the composite form is not in olivine."""
        if not _qnn_gpu(accelerator):
            return [f"StaticLLM: olivine runs Olive's single-model form, for a gpu target with "
                    f"QNNExecutionProvider; the target is {accelerator.device} with "
                    f"{accelerator.execution_provider} (Olive's composite form, embeddings + "
                    "transformer splits + lm_head, is not supported yet)"]
        if group := config.group_session_options:
            return [f"group_session_options: only the composite form uses it (got {group!r})"]
        return []

    def run(self, model: ModelHandle, config: StaticLLMConfig, context: PassContext) -> OnnxModel:
        """Fix the shapes and update genai_config.json."""
        from olivine_onnx.static_llm import static_llm

        return static_llm(model, config, context)


def _qnn_gpu(accelerator: Accelerator) -> bool:
    return accelerator.device == "gpu" and accelerator.execution_provider == "QNNExecutionProvider"


ALL: tuple[type[Pass], ...] = (CaptureSplitInfo, SplitModel, ComposeOnnxModels, StaticLLM)
