"""Loading a pipeline's parts for training, and encoding prompts the way each variant does."""

from __future__ import annotations

from typing import Any

import attrs

from olivine import UsageError


@attrs.define
class Components:
    """The parts of a pipeline training needs: frozen encoders and VAE, the denoiser."""

    denoiser: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    scheduler: Any = None


#: ``load_kwargs`` of the input model that apply to every component's ``from_pretrained``
LOAD_KWARGS = ("revision", "variant", "cache_dir", "local_files_only", "token", "use_safetensors")


def check_load_kwargs(load_kwargs: dict[str, Any]) -> None:
    """Refuse ``load_kwargs`` that training cannot honour (dtype and device are its own)."""
    for key in load_kwargs:
        if key not in LOAD_KWARGS:
            raise UsageError(f"input_model.load_kwargs.{key}: not used for training (SDLoRA "
                             "loads each component itself; dtypes follow "
                             f"training_args.mixed_precision); it takes {', '.join(LOAD_KWARGS)}")


def _load_one(cls: Any, path: str, sub: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(path, subfolder=sub, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"model {path!r}: cannot load {sub} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); give a diffusers "
                         "pipeline folder with that component (or a hub id, online)") from None


def load_components(path: str, variant: str, device: Any, dtype: Any,
                    load_kwargs: dict[str, Any] | None = None) -> Components:
    """Load the pipeline at ``path`` (a folder or hub id) for ``variant``; everything frozen."""
    import functools

    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, CLIPTextModel

    check_load_kwargs(load_kwargs or {})
    _load: Any = functools.partial(_load_one, **(load_kwargs or {}))
    text_encoder = _load(CLIPTextModel, path, "text_encoder")
    tokenizer = _load(AutoTokenizer, path, "tokenizer")
    vae = _load(AutoencoderKL, path, "vae")
    parts = Components(denoiser=None, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
    if variant == "flux":
        from diffusers import FluxTransformer2DModel
        from transformers import T5EncoderModel

        parts.denoiser = _load(FluxTransformer2DModel, path, "transformer")
        parts.text_encoder_2 = _load(T5EncoderModel, path, "text_encoder_2")
        parts.tokenizer_2 = _load(AutoTokenizer, path, "tokenizer_2")
    else:
        from diffusers import DDPMScheduler, UNet2DConditionModel

        parts.denoiser = _load(UNet2DConditionModel, path, "unet")
        parts.scheduler = _load(DDPMScheduler, path, "scheduler")
        if variant == "sdxl":
            from transformers import CLIPTextModelWithProjection

            parts.text_encoder_2 = _load(CLIPTextModelWithProjection, path, "text_encoder_2")
            parts.tokenizer_2 = _load(AutoTokenizer, path, "tokenizer_2")
    for module in (parts.vae, parts.text_encoder, parts.text_encoder_2, parts.denoiser):
        if module is not None:
            module.requires_grad_(False)
            module.to(device, dtype=dtype)
    return parts


def token_ids(tokenizer: Any, captions: list[str], length: int, device: Any) -> Any:
    """Padded, truncated token ids of ``captions`` (Olive: 77 for CLIP, 512 for T5)."""
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt").input_ids
    return ids.to(device)


def encode_sd(parts: Components, captions: list[str], device: Any) -> Any:
    """SD 1.5: the CLIP text encoder's last hidden state."""
    return parts.text_encoder(token_ids(parts.tokenizer, captions, 77, device),
                              return_dict=False)[0]


def encode_sdxl(parts: Components, captions: list[str], device: Any) -> tuple[Any, Any]:
    """SDXL: both encoders' penultimate hidden states concatenated, and the second's pooled
    projection."""
    import torch

    one = parts.text_encoder(token_ids(parts.tokenizer, captions, 77, device),
                             output_hidden_states=True).hidden_states[-2]
    out2 = parts.text_encoder_2(token_ids(parts.tokenizer_2, captions, 77, device),
                                output_hidden_states=True)
    return torch.cat([one, out2.hidden_states[-2]], dim=-1), out2[0]


def encode_flux(parts: Components, captions: list[str], device: Any) -> tuple[Any, Any, Any]:
    """Flux: T5's hidden states, CLIP's pooled output and zero text position ids."""
    import torch

    pooled = parts.text_encoder(token_ids(parts.tokenizer, captions, 77, device),
                                output_hidden_states=True).pooler_output
    embeds = parts.text_encoder_2(token_ids(parts.tokenizer_2, captions, 512, device))[0]
    text_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=embeds.dtype)
    return embeds, pooled, text_ids
