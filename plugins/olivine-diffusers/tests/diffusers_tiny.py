"""Tiny randomly initialized diffusers pipelines (SD 1.5, SDXL, Flux shapes) and image folders,
built here without any hub download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: characters of the tiny byte-level tokenizers (the prompts below use only these)
_CHARS = "abcdefghijklmnopqrstuvwxyz "


def clip_tokenizer(folder: Path) -> Any:
    """A CLIPTokenizer over single characters (no merges), saved to ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for ch in _CHARS.strip():
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                        pad_token="<|endoftext|>", model_max_length=77)
    return tok


def t5_tokenizer() -> Any:
    """A word-level fast tokenizer standing in for T5's (character words, </s> and <pad>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in _CHARS.strip():
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


def _clip(vocab: int, hidden: int, with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         projection_dim=hidden, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                         pad_token_id=vocab - 1)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def _vae(latent_channels: int = 4, flux: bool = False) -> Any:
    from diffusers import AutoencoderKL

    kwargs = {"shift_factor": 0.1, "scaling_factor": 0.5, "use_quant_conv": False,
              "use_post_quant_conv": False} if flux else {}
    return AutoencoderKL(in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                         block_out_channels=(8, 8), latent_channels=latent_channels,
                         layers_per_block=1, norm_num_groups=4, sample_size=32, **kwargs)


def sd15_pipeline(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline folder: UNet 8/16 channels, CLIP 16 wide, VAE /2."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / "_tok")
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_clip(len(tok), 16), tokenizer=tok,
                                   unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def sdxl_pipeline(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionXLPipeline folder: two CLIP encoders (16 and 8 wide), text_time UNet."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / "_tok")
    tok2 = clip_tokenizer(folder.parent / "_tok2")
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=24, attention_head_dim=4, norm_num_groups=4,
                                addition_embed_type="text_time", addition_time_embed_dim=4,
                                projection_class_embeddings_input_dim=6 * 4 + 8)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=_clip(len(tok), 16),
                                     text_encoder_2=_clip(len(tok2), 8, with_projection=True),
                                     tokenizer=tok, tokenizer_2=tok2, unet=unet,
                                     scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.save_pretrained(str(folder))
    return folder


def flux_pipeline(folder: Path, seed: int = 0) -> Path:
    """A FluxPipeline folder: a one-block transformer, CLIP and a one-layer T5, VAE /2."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder.parent / "_tok")
    tok2 = t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2))
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1,
                                         num_single_layers=1, attention_head_dim=8,
                                         num_attention_heads=2, joint_attention_dim=16,
                                         pooled_projection_dim=16, guidance_embeds=True,
                                         axes_dims_rope=(4, 2, 2))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(flux=True),
                        text_encoder=_clip(len(tok), 16), tokenizer=tok, text_encoder_2=t5,
                        tokenizer_2=tok2, transformer=transformer)
    pipe.save_pretrained(str(folder))
    return folder


def shapes_folder(folder: Path, count: int = 4, size: tuple[int, int] = (32, 32),
                  caption: str | None = "a red square") -> Path:
    """``count`` PNGs of a red square on a blue field (numpy-drawn), each with a caption file."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(count):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[..., 2] = 200
        x, y = 4 + (i * 3) % (w // 3), 4 + (i * 5) % (h // 3)
        img[y:y + h // 2, x:x + w // 2] = (230, 20, 20)
        Image.fromarray(img).save(folder / f"img{i}.png")
        if caption is not None:
            (folder / f"img{i}.txt").write_text(caption)
    return folder


def fingerprint(files: list[Path]) -> str:
    """sha256 over the sorted tensor names and bytes of the safetensors ``files`` (16 hex digits):
    how the tests compare adapters with the ones Olive 0.13 trained."""
    import hashlib

    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for f in files:
        tensors = load_file(str(f))
        for key in sorted(tensors):
            digest.update(key.encode())
            digest.update(tensors[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
