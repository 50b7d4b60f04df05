"""The passes: ``LoRA``, ``QLoRA``, ``DoRA``, ``LoHa``, ``LoKr``, ``MergeAdapterWeights`` and
``ExtractAdapters``."""

from __future__ import annotations

from typing import Any, ClassVar

from olivine import HfModel, ModelHandle, OnnxModel, Pass, PassContext, UsageError
from olivine_lora.config import ExtractAdaptersConfig, LoRAConfig, MergeConfig, QLoRAConfig
from olivine_lora.variants import DoRAConfig, LoHaConfig, LoKrConfig

TRAINING_LIBRARIES = ("torch", "transformers", "peft", "accelerate")


class LoRA(Pass):
    """Fine-tune a Hugging Face causal LM with a LoRA adapter (peft and the transformers Trainer).

    The output is the adapter (``adapter/`` in the output folder, peft's format) for the
    unchanged base model, plus ``olivine_training.json`` (losses, perplexities, tokens/s).
    Checkpoints are kept while the step runs; a killed run resumes from the last one.
    """

    name: ClassVar[str] = "LoRA"
    aliases: ClassVar[tuple[str, ...]] = ("lora_finetune",)
    Config: ClassVar[type] = LoRAConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "adapter"
    libraries: ClassVar[tuple[str, ...]] = TRAINING_LIBRARIES
    isolate: ClassVar[bool] = True
    # 2: Olive's training defaults (3 epochs, batch 8, constant schedule, ...), which are not
    # in the step's config when left out, so cached results of version 1 must not be reused
    version: ClassVar[str] = "2"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Train the adapter into ``context.work_dir``."""
        from olivine_lora.train import train_adapter

        if not isinstance(model, HfModel):
            raise UsageError(f"{self.name} takes Hugging Face models, got a {model.kind} model")
        return train_adapter(model, config, context)


class QLoRA(LoRA):
    """Fine-tune with a LoRA adapter over a 4-bit (bitsandbytes) copy of the base model.

    Needs bitsandbytes (``pip install 'olivine-lora[qlora]'``); 0.46 and later also run
    on CPU. Without it the step fails when it runs (a dry run still checks the config).
    The adapter is saved for the full-precision base model.
    """

    name: ClassVar[str] = "QLoRA"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = QLoRAConfig
    libraries: ClassVar[tuple[str, ...]] = (*TRAINING_LIBRARIES, "bitsandbytes")


class DoRA(LoRA):
    """Fine-tune with a DoRA adapter: LoRA plus a trained magnitude per output feature.

    peft's ``use_dora``. The output is a peft adapter like LoRA's; it merges into the base
    model (``MergeAdapterWeights``) but cannot become onnxruntime-genai adapter inputs.
    """

    name: ClassVar[str] = "DoRA"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = DoRAConfig


class LoHa(LoRA):
    """Fine-tune with a LoHa adapter (the Hadamard product of two low-rank updates; peft's LoHa).

    The output is a peft adapter; merge it into the base model (``MergeAdapterWeights``)
    before exporting.
    """

    name: ClassVar[str] = "LoHa"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = LoHaConfig


class LoKr(LoRA):
    """Fine-tune with a LoKr adapter (a Kronecker-product update; peft's LoKr).

    The output is a peft adapter; merge it into the base model (``MergeAdapterWeights``)
    before exporting.
    """

    name: ClassVar[str] = "LoKr"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = LoKrConfig


class MergeAdapterWeights(Pass):
    """Fold a LoRA adapter into its base model's weights: a plain Hugging Face model comes out.

    Takes the output of LoRA/QLoRA, or an input model with ``adapter_path``. Refuses an
    adapter trained for a different base model (names the layers that do not fit).
    """

    name: ClassVar[str] = "MergeAdapterWeights"
    aliases: ClassVar[tuple[str, ...]] = ("merge_adapter_weights",)
    Config: ClassVar[type] = MergeConfig
    accepts: ClassVar[tuple[str, ...]] = ("adapter", "hf")
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft", "safetensors")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Merge into ``context.work_dir``."""
        from olivine_lora.merge import merge_adapter

        return merge_adapter(model, config.torch_dtype, context.work_dir, context.progress)


class ExtractAdapters(Pass):
    """Turn the LoRA weights of a model built with an adapter into model inputs.

    For onnxruntime-genai models that ModelBuilder built from a model with an adapter.
    The output model runs as the base model when no adapter is set, and loads
    ``.onnx_adapter`` files at run time (``og.Adapters``); the adapter it was built with
    is written beside it. ``olivine convert-adapters`` makes files for other adapters.
    """

    name: ClassVar[str] = "ExtractAdapters"
    aliases: ClassVar[tuple[str, ...]] = ("extract_adapters",)
    Config: ClassVar[type] = ExtractAdaptersConfig
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "numpy", "safetensors")
    isolate: ClassVar[bool] = False
    version: ClassVar[str] = "1"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Rewrite the model into ``context.work_dir`` and write the adapter file there."""
        from olivine_lora.adapters import read_adapter
        from olivine_lora.onnx_adapter import (
            convert_peft_adapter,
            extract_adapters,
            write_adapter_file,
        )

        if not isinstance(model, OnnxModel):
            raise UsageError(f"{self.name} takes ONNX models, got a {model.kind} model")
        source = model.model_file()
        context.progress(0, 3, f"reading {source.name}")
        if config.adapter_type != "lora":
            return _pass_through(model, config, context)
        found = extract_adapters(source, context.work_dir, dynamic_rank=config.dynamic_lora_r,
                                 optional=config.optional_inputs, save_options=config)
        context.progress(1, 3, f"{len(found.inputs)} LoRA weights are now inputs")
        if config.adapter_path:
            inputs = {i.name: i for i in found.inputs}
            params = convert_peft_adapter(read_adapter(config.adapter_path), inputs)
        else:
            params = found.weights
            if found.dequantized:
                context.logger.warning(
                    "%d LoRA weights were quantized by the builder; the adapter file holds their "
                    "dequantized values. Set adapter_path (or run `olivine convert-adapters`) for "
                    "the exact ones", found.dequantized)
        target = context.work_dir / config.adapter_file_name
        write_adapter_file(params, target)
        context.progress(3, 3, "done")
        attributes = {**model.attrs_dict(), "lora_inputs": len(found.inputs),
                      "adapter_file": config.adapter_file_name}
        return OnnxModel(path=str(context.work_dir), onnx_file_name=source.name,
                         attributes=attributes)


def _pass_through(model: OnnxModel, config: Any, context: PassContext) -> OnnxModel:
    """Olive's rule for a model without weights of ``adapter_type``: it comes out unchanged.

    DoRA and LoHa weights cannot become inputs here; a model that has them is an error.
    """
    import onnx

    from olivine.onnxsave import save_onnx
    from olivine_lora.onnx_adapter import adapter_weight_names

    adapter_type = config.adapter_type
    found = adapter_weight_names(model.model_file(), adapter_type)
    if found:
        raise UsageError(f"adapter_type {adapter_type}: {model.model_file()} holds {len(found)} "
                         f"{adapter_type} weights ({found[0]}, ...), which cannot become model "
                         "inputs here (onnxruntime-genai adapters are LoRA pairs); merge the "
                         "adapter into the model before converting it (MergeAdapterWeights)")
    context.logger.warning("ExtractAdapters: %s holds no %s weights (the adapter was merged into "
                           "it, or there was none); the model passes through unchanged",
                           model.model_file().name, adapter_type)
    proto = onnx.load(str(model.model_file()), load_external_data=True)
    result = save_onnx(proto, context.work_dir, config, file_name=model.model_file().name,
                       source=model, lora_inputs=0)
    context.progress(3, 3, f"no {adapter_type} weights: unchanged")
    return result


PASSES = (LoRA, QLoRA, DoRA, LoHa, LoKr, MergeAdapterWeights, ExtractAdapters)
