"""Options of ``SDLoRA`` (Olive 0.13's names and defaults); no torch here."""

from __future__ import annotations

from typing import Any, Literal

import attrs

import olivine

MixedPrecision = Literal["no", "fp16", "bf16"]
LRScheduler = Literal["constant", "linear", "cosine", "cosine_with_restarts", "polynomial",
                      "constant_with_warmup"]
ModelVariant = Literal["auto", "sd", "sdxl", "sd3", "flux", "sana"]

#: LoRA targets when ``target_modules`` is not given (Olive's).
SD_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
FLUX_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_q_proj", "add_v_proj",
                "to_add_out")


def _at_least_one(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{attribute.name}: must be 1 or more, got {value}")


def _not_negative(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name}: must be 0 or more, got {value}")


def _positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name}: must be more than 0, got {value}")


def _dropout(instance: Any, attribute: Any, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name}: a probability in [0, 1), got {value}")


def _targets(instance: Any, attribute: Any, value: list[str] | None) -> None:
    if value is not None and (not value or any(not str(v).strip() for v in value)):
        raise ValueError("target_modules: give module names like [\"to_q\", \"to_v\"] (none may "
                         "be empty), or leave it out for Olive's defaults")


@attrs.frozen
class DiffusionTrainingArguments:
    """Olive's ``DiffusionTrainingArguments``: the ``training_args`` of ``SDLoRA``."""

    learning_rate: float = attrs.field(default=1e-4, validator=_positive, metadata=olivine.option(
        help="AdamW learning rate (default 1e-4)"))
    max_train_steps: int = attrs.field(default=1000, validator=_at_least_one, metadata=olivine.option(
        help="optimizer steps to train (default 1000)"))
    train_batch_size: int = attrs.field(default=1, validator=_at_least_one, metadata=olivine.option(
        help="images per batch (default 1); a batch holds images of one bucket size"))
    gradient_accumulation_steps: int = attrs.field(
        default=4, validator=_at_least_one, metadata=olivine.option(
        help="batches whose gradients add up to one optimizer step (default 4)"))
    gradient_checkpointing: bool = attrs.field(default=True, metadata=olivine.option(
        help="recompute activations in the backward pass: less memory, slower (default true)"))
    mixed_precision: MixedPrecision = attrs.field(default="bf16", metadata=olivine.option(
        help="no, fp16 (needs a CUDA GPU) or bf16 (default): the frozen weights' dtype and "
                "autocast; the LoRA weights stay float32. Flux always trains in bf16"))
    lr_scheduler: LRScheduler = attrs.field(default="constant", metadata=olivine.option(
        help="diffusers' schedule (default constant)"))
    lr_warmup_steps: int = attrs.field(default=0, validator=_not_negative, metadata=olivine.option(
        help="steps of linear learning-rate warmup (default 0)"))
    snr_gamma: float | None = attrs.field(default=None, validator=_positive, metadata=olivine.option(
        help="Min-SNR loss weighting gamma (SD/SDXL; 5.0 is usual); null: plain MSE"))
    max_grad_norm: float = attrs.field(default=1.0, validator=_positive, metadata=olivine.option(
        help="gradient clipping norm (default 1.0)"))
    checkpointing_steps: int = attrs.field(default=500, validator=_at_least_one, metadata=olivine.option(
        help="steps between training-state checkpoints in the step's state folder (default "
                "500); a killed or failed run of the same step resumes from the last one"))
    logging_steps: int = attrs.field(default=10, validator=_at_least_one, metadata=olivine.option(
        help="steps between loss log lines (default 10); every step's loss is recorded in "
                "olivine_training.json"))
    seed: int | None = attrs.field(default=None, metadata=olivine.option(
        help="seed of the LoRA initialization, noise, timesteps and data order "
                "(default: none, a different run each time)"))
    guidance_scale: float = attrs.field(default=3.5, metadata=olivine.option(
        help="Flux only: the guidance embedding's value while training (default 3.5)"))


def _training_args(value: Any) -> DiffusionTrainingArguments | None:
    if value is None or isinstance(value, DiffusionTrainingArguments):
        return value
    return DiffusionTrainingArguments(**value)


@attrs.frozen
class SDLoRAConfig:
    """Options of ``SDLoRA`` (Olive's names; ``olivine passes SDLoRA`` lists them)."""

    train_data_config: str = attrs.field(metadata=olivine.option(
        data_config=True,
        help="the data config to train on: an ImageDataContainer with image_folder_dataset "
                "(a folder of images with optional .txt captions beside them)"))
    model_variant: ModelVariant = attrs.field(default="auto", metadata=olivine.option(
        help="sd, sdxl or flux; auto (default): read from the pipeline's configs "
                "(the input model's model_variant when it sets one). sd3 and sana are "
                "Olive's names that its pass does not train either: an error"))
    r: int = attrs.field(default=16, validator=_at_least_one, metadata=olivine.option(
        help="LoRA rank (default 16; SD 4-16, Flux 16-64)"))
    alpha: float | None = attrs.field(default=None, validator=_positive, metadata=olivine.option(
        help="LoRA alpha (default: r)"))
    lora_dropout: float = attrs.field(default=0.0, validator=_dropout, metadata=olivine.option(
        help="dropout on the LoRA path while training (default 0)"))
    target_modules: list[str] | None = attrs.field(default=None, validator=_targets, metadata=olivine.option(
        help="attention layers to adapt; default SD/SDXL: to_k, to_q, to_v, to_out.0; Flux: "
                "those and add_k_proj, add_q_proj, add_v_proj, to_add_out"))
    training_args: DiffusionTrainingArguments | None = attrs.field(
        default=None, converter=_training_args, metadata=olivine.option(
            help="training options (DiffusionTrainingArguments: max_train_steps, "
                    "learning_rate, train_batch_size, gradient_accumulation_steps, "
                    "mixed_precision, lr_scheduler, ...)"))
    merge_lora: bool = attrs.field(default=False, metadata=olivine.option(
        help="save the UNet/transformer with the LoRA merged in (a diffusers model folder in "
                "adapter/, as Olive) instead of the adapter"))
    dreambooth: bool = attrs.field(default=False, metadata=olivine.option(
        help="DreamBooth: every training image gets instance_prompt as its caption"))
    instance_prompt: str | None = attrs.field(default=None, metadata=olivine.option(
        help="the DreamBooth prompt (required with dreambooth), e.g. \"a photo of sks dog\""))
    with_prior_preservation: bool = attrs.field(default=False, metadata=olivine.option(
        help="add a prior-preservation loss on class images (needs dreambooth and "
                "class_prompt)"))
    class_prompt: str | None = attrs.field(default=None, metadata=olivine.option(
        help="caption of the class images, e.g. \"a photo of a dog\""))
    class_data_dir: str | None = attrs.field(default=None, metadata=olivine.option(
        input_path=True,
        help="folder of class images; when it holds fewer than num_class_images, the base "
                "pipeline generates the rest into it"))
    num_class_images: int = attrs.field(default=200, validator=_at_least_one, metadata=olivine.option(
        help="class images for prior preservation (default 200)"))
    prior_loss_weight: float = attrs.field(default=1.0, validator=_not_negative, metadata=olivine.option(
        help="weight of the prior-preservation loss (default 1.0)"))

    def __attrs_post_init__(self) -> None:
        """Olive's checks of the DreamBooth options, made before anything runs."""
        if self.dreambooth and not self.instance_prompt:
            raise ValueError("instance_prompt: required when dreambooth is true")
        if self.with_prior_preservation:
            if not self.dreambooth:
                raise ValueError("with_prior_preservation: needs dreambooth: true")
            if not self.class_prompt:
                raise ValueError("class_prompt: required when with_prior_preservation is true")
        if self.model_variant in ("sd3", "sana"):
            raise ValueError(f"model_variant: {self.model_variant} is not trained by SDLoRA "
                             "(Olive's pass trains sd, sdxl and flux)")

    def args(self) -> DiffusionTrainingArguments:
        """``training_args``, or Olive's defaults when none are given."""
        return self.training_args or DiffusionTrainingArguments()

    def lora_alpha(self) -> float:
        """``alpha``, else ``r`` (Olive's default)."""
        return float(self.alpha if self.alpha is not None else self.r)

    def targets(self, variant: str) -> list[str]:
        """``target_modules``, else Olive's defaults for ``variant``."""
        if self.target_modules:
            return list(self.target_modules)
        return list(FLUX_TARGETS if variant == "flux" else SD_TARGETS)
