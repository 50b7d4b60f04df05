"""The ``SDLoRA`` pass: a LoRA for a diffusion pipeline's UNet (SD 1.5, SDXL) or transformer (Flux)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from olivine import Accelerator, AdapterModel, ModelHandle, Pass, PassContext, UsageError
from olivine_diffusers.config import SDLoRAConfig
from olivine_diffusers.model import TRAINED_VARIANTS, DiffusersModel


def resolve_variant(model: DiffusersModel, config: SDLoRAConfig) -> str:
    """The variant to train: the pass's ``model_variant``, the model's, or detected (Olive's order)."""
    variant = config.model_variant if config.model_variant != "auto" else model.detected_variant()
    if variant is None and not model.is_local():
        variant = _hub_variant(model.path)
    if variant is None and not model.is_local():
        raise UsageError(f"model_variant: cannot read the configs of hub model {model.path!r} "
                         "(offline, or not a diffusers pipeline); download it to a folder, or "
                         "set model_variant to sd, sdxl or flux")
    if variant is None:
        raise UsageError(f"model_variant: cannot detect the variant of {model.path!r} (no "
                         "transformer/ or unet/ config.json); set model_variant to sd, sdxl or "
                         "flux")
    if variant not in TRAINED_VARIANTS:
        raise UsageError(f"model_variant: {variant} is not trained by SDLoRA (sd, sdxl and flux "
                         "are, as in Olive)")
    return variant


def _hub_variant(model_id: str) -> str | None:
    """The variant of a hub pipeline, read from its component configs (needs the network)."""
    from diffusers import ConfigMixin

    for sub in ("transformer", "unet"):
        try:
            loaded: Any = ConfigMixin.load_config(model_id, subfolder=sub)
            cfg: dict[str, Any] = dict(loaded)
        except (OSError, ValueError):
            continue
        name = str(cfg.get("_class_name", ""))
        if sub == "transformer":
            return "flux" if "Flux" in name else ("sd3" if "SD3" in name else
                                                  "sana" if "Sana" in name else None)
        big = int(cfg.get("cross_attention_dim", 768) or 768) >= 2048
        return "sdxl" if big or cfg.get("addition_embed_type") == "text_time" else "sd"
    return None


class SDLoRA(Pass):
    """Train a LoRA adapter for a diffusers pipeline (Olive's ``SDLoRA``).

    The UNet (SD 1.5, SDXL) or transformer (Flux) gets the LoRA; text encoders and VAE stay
    frozen. The output folder holds ``adapter/pytorch_lora_weights.safetensors`` (diffusers'
    format: ``pipe.load_lora_weights(folder)``), or with ``merge_lora`` the merged
    UNet/transformer in ``adapter/``, and ``olivine_training.json`` (loss per step, the
    fixed-noise loss before and after).
    """

    name: ClassVar[str] = "SDLoRA"
    Config: ClassVar[type] = SDLoRAConfig
    accepts: ClassVar[tuple[str, ...]] = ("diffusers",)
    produces: ClassVar[str] = "adapter"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers", "peft")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """The variant must be one SDLoRA trains (read from a local pipeline's configs)."""
        if not isinstance(model, DiffusersModel):
            return []
        variant = config.model_variant if config.model_variant != "auto" else \
            model.detected_variant()
        if variant is not None and variant not in TRAINED_VARIANTS:
            return [f"model_variant: the model is {variant}, which SDLoRA does not train (sd, "
                    "sdxl and flux, as in Olive)"]
        if variant is None and model.is_local():
            return ["model_variant: no transformer/ or unet/ config.json in the pipeline folder; "
                    "set model_variant to sd, sdxl or flux"]
        return []

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Train into ``context.work_dir``; an adapter model for the base pipeline comes out."""
        from olivine_diffusers.classimages import class_images_for
        from olivine_diffusers.train import train_lora

        if not isinstance(model, DiffusersModel):
            raise UsageError(f"{self.name} takes a diffusers pipeline (DiffusersModel), got a "
                             f"{model.kind} model")
        if model.adapter_path:
            raise UsageError("input_model.adapter_path: SDLoRA trains a new adapter on the base "
                             "pipeline; leave adapter_path out")
        from olivine_diffusers.components import check_load_kwargs

        load_kwargs = {k: v for k, v in model.load_kwargs}
        check_load_kwargs(load_kwargs)
        variant = resolve_variant(model, config)
        dataset = load_images(context, config.train_data_config)
        class_images: list[str] = []
        if config.with_prior_preservation:
            class_images = class_images_for(model.path, variant, config, dataset, context)
        record = train_lora(model.path, variant, config, dataset, class_images, context,
                            load_kwargs)
        attributes = {**model.attrs_dict(), "model_variant": variant,
                      "adapter_path": "adapter", "merged": config.merge_lora,
                      "steps": record["steps"]}
        return AdapterModel(path=str(context.work_dir), base=model, attributes=attributes)


def load_images(context: PassContext, name: str) -> Any:
    """The pre-processed images of data config ``name`` (an ImageDataContainer)."""
    from olivine.data import resolve
    from olivine_diffusers.data import ImageFolder

    dc = context.data_configs.get(name)
    if dc is None:
        raise UsageError(f"train_data_config: no data config named {name!r}")
    resolved = resolve(dc, kinds=("load_dataset", "pre_process_data"))
    dataset = resolved.pre_process(resolved.load_dataset())
    if not isinstance(dataset, ImageFolder) or not dataset.bucket_assignments:
        raise UsageError(f"data config {name!r}: SDLoRA trains on an ImageDataContainer "
                         "(image_folder_dataset, pre-processed by image_lora_preprocess with "
                         "image_resizing or aspect_ratio_bucketing)")
    for item in dataset.items:
        if not Path(item["image_path"]).is_file():
            raise UsageError(f"data config {name!r}: image {item['image_path']!r} is gone")
    return dataset


PASSES = (SDLoRA,)
