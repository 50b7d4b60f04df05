"""The ``ModelBuilder`` pass: a Hugging Face causal LM in, an onnxruntime-genai model out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine import (
    Accelerator,
    AdapterModel,
    CompositeModel,
    HfModel,
    ModelHandle,
    OnnxModel,
    Pass,
    PassContext,
    UsageError,
)
from olivine_modelbuilder.config import (
    ModelBuilderConfig,
    builder_options,
    check_config,
    provider_fallback,
    provider_warnings,
    resolve_provider,
)


class ModelBuilder(Pass):
    """Convert a Hugging Face text-generation model with onnxruntime-genai's model builder.

    The output folder holds model.onnx, its external data, genai_config.json, the
    tokenizer files and the chat template: everything ``onnxruntime_genai.Model``
    and ``olivine generate`` need. A Whisper model is built in two parts, encoder.onnx
    and decoder.onnx, beside one genai_config.json: the output is then a composite
    model of those two (named by file, as in Olive), and the ONNX passes after it
    run on each part. With ``metadata_only`` the input is an ONNX decoder
    (OnnxConversion's, with ``save_metadata_for_token_generation``): the output is that
    model with genai_config.json and the tokenizer files written beside it.

    A target whose provider the builder does not know (QNN, OpenVINO, ...) is built for
    cpu, as Olive does; the log and the output model's ``provider_fallback`` say so.
    """

    name: ClassVar[str] = "ModelBuilder"
    aliases: ClassVar[tuple[str, ...]] = ("model_builder", "GenAIModelBuilder")
    Config: ClassVar[type] = ModelBuilderConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf", "adapter", "onnx")
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnxruntime-genai", "onnx-ir", "onnxruntime", "onnx",
                                            "torch", "transformers")
    isolate: ClassVar[bool] = True
    preload: ClassVar[tuple[str, ...]] = ("olivine_modelbuilder.preimport",)
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """Refuse what builds but cannot run: precision/provider pairs, and, when the input
        model is a local folder, its architecture, tokenizer and shapes (config.json only)."""
        problems = check_config(config, accelerator)
        provider = resolve_provider(config, accelerator)
        kind = getattr(model, "kind", None)
        if config.metadata_only and kind not in (None, "onnx"):
            problems.append(f"metadata_only: writes genai_config.json for an ONNX model; the input "
                            f"is a {kind} model (set metadata_only false to build it)")
        elif not config.metadata_only and kind == "onnx":
            problems.append("the input is an ONNX model: ModelBuilder builds from a Hugging Face "
                            "model, or with metadata_only: true writes genai_config.json for an "
                            "ONNX decoder; set metadata_only: true")
        if isinstance(model, AdapterModel):
            model = model.base
        if problems or not isinstance(model, HfModel) or not model.is_local():
            return problems
        from olivine_modelbuilder.modelinfo import check_buildable, read_model

        try:
            info = read_model(model.path)
            check_buildable(info, precision=config.precision, provider=provider,
                            block_size=config.int4_block_size, algo=config.int4_algo,
                            symmetric=config.int4_is_symmetric)
        except UsageError as exc:
            return [str(exc)]
        return []

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Check the model folder, run the builder into ``context.work_dir``, return the handle."""
        from olivine_modelbuilder.build import build_model, model_parts
        from olivine_modelbuilder.modelinfo import KNOWN_INACCURATE, check_buildable, read_model
        from olivine_modelbuilder.quant_embeds import embeds_settings, quantize_gather

        problems = self.check(config, context.accelerator, model)
        if problems:
            raise UsageError("; ".join(problems))
        provider = resolve_provider(config, context.accelerator)
        fallback = provider_fallback(config, context.accelerator)
        if fallback:
            context.logger.warning("%s", fallback)
        if config.metadata_only:
            from olivine_modelbuilder.metadata import write_metadata

            assert isinstance(model, OnnxModel)
            return write_metadata(model, config, provider, context, fallback)
        model = with_adapter(model)
        context.progress(0, None, "reading the model's config")
        info = read_model(model.path)
        check_buildable(info, precision=config.precision, provider=provider,
                        block_size=config.int4_block_size, algo=config.int4_algo,
                        symmetric=config.int4_is_symmetric)
        for warning in provider_warnings(config, provider):
            context.logger.warning("%s", warning)
        if info.architecture in KNOWN_INACCURATE:
            context.logger.warning("%s: %s", info.architecture, KNOWN_INACCURATE[info.architecture])
        load = model.load_options()
        layers = info.text_config().get("num_hidden_layers")
        model_file = build_model(
            info.path, context.work_dir, precision=config.precision, provider=provider,
            options=builder_options(config), local=info.local,
            trust_remote_code=bool(load.get("trust_remote_code", False)),
            adapter_path=model.adapter_path, search=config.search,
            num_layers=layers if isinstance(layers, int) else None,
            norm_epsilon=info.norm_epsilon(),
            progress=context.progress, logger=context.logger)
        parts = model_parts(context.work_dir, str(config.extra_options.get("filename", "model.onnx")))
        embeds = embeds_settings(info.path) if info.local else None
        if embeds is not None:
            count = sum(quantize_gather(part, info.path, embeds) for part in parts)
            if not count:
                raise UsageError(f"{model.path} has quantized embeddings ({embeds['module']}), but the "
                                 "built graph has no Gather on the embedding table to replace "
                                 "(exclude_embeds?)")
            context.logger.info("embeddings: GatherBlockQuantized, %d bits, block %d",
                                embeds["bits"], embeds["group_size"])
        context.progress(1, 1, "done")
        attributes = {"is_generative": True, "genai_config": "genai_config.json",
                      "precision": config.precision, "execution_provider": provider,
                      "architecture": info.architecture}
        if fallback:
            attributes["provider_fallback"] = fallback
        if len(parts) > 1:  # Whisper: encoder.onnx and decoder.onnx beside one genai_config.json
            context.logger.info("built %d ONNX models: %s", len(parts), ", ".join(p.name for p in parts))
            # as Olive: named by file, so passes run on each write back to those names
            return CompositeModel(path=str(context.work_dir), attributes=attributes, components=tuple(
                (part.name, OnnxModel(path=str(context.work_dir), onnx_file_name=part.name,
                                      attributes=attributes)) for part in parts))
        return OnnxModel(path=str(context.work_dir), onnx_file_name=model_file.name,
                         attributes=attributes)


def adapter_folder(path: str | Path) -> Path:
    """The peft adapter folder at ``path``: the folder, or its ``adapter/`` (olivine finetune's
    output folder); :class:`UsageError` when neither holds adapter_config.json."""
    p = Path(path).expanduser()
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate.resolve()
    raise UsageError(f"{str(path)!r} is not a LoRA adapter folder (no adapter_config.json in it "
                     "or in its adapter/ folder)")


def with_adapter(model: ModelHandle) -> HfModel:
    """An HfModel to build: ``model`` itself, or the base of an adapter (a LoRA step's output)
    with ``adapter_path`` set, so that the builder bakes the adapter in."""
    if isinstance(model, AdapterModel):
        if not isinstance(model.base, HfModel):
            raise UsageError("ModelBuilder takes adapters of Hugging Face models; this adapter's "
                             f"base is a {model.base.kind if model.base else 'missing'} model")
        return attrs.evolve(model.base, adapter_path=str(adapter_folder(model.path)))
    if not isinstance(model, HfModel):
        raise UsageError(f"ModelBuilder takes Hugging Face models, got a {model.kind} model")
    return model
