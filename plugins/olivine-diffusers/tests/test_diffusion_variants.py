"""SDXL and Flux: the variant is detected from the pipeline folder, Olive's defaults follow it,
and a few training steps on tiny pipelines give adapters diffusers loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers_tiny import fingerprint

Cli = Callable[..., tuple[int, str, str]]

#: Olive 0.13 as the oracle (olive-ai 0.13.0, diffusers 0.42.1, peft 0.21.2, accelerate 1.15.0,
#: torch 2.13.0 CPU): SDLoRA run as a workflow on the pipelines sdxl_pipeline / flux_pipeline
#: (seed 0) build, the four shapes images (image_resizing to 32) and _train's options (8 steps,
#: learning rate 1e-2, accumulation 1, seed 0, Olive's default bf16). Pipeline and adapter
#: fingerprints (diffusers_tiny.fingerprint).
OLIVE = {"sdxl": ("b113458e6c20bd2a", "ff04b48f9a2d6c82"),
         "flux": ("adcaf7660b8adc3e", "0cdd890b18769323")}


def _check_olive(variant: str, model: Path, out: Path) -> None:
    """Bit for bit Olive's adapter, when this environment builds the pipeline Olive ran on."""
    pipeline, adapter = OLIVE[variant]
    if fingerprint(sorted(model.glob("*/*.safetensors"))) == pipeline:
        assert fingerprint([out / "adapter" / "pytorch_lora_weights.safetensors"]) == adapter


def _dry_run(cli: Cli, model: Path, images: Path, tmp: Path, *extra: str) -> dict[str, Any]:
    code, out, err = cli("diffusion-lora", "-m", str(model), "-d", str(images), "-o",
                         str(tmp / "out"), "--dry_run", *extra)
    assert code == 0, err
    return json.loads(out[out.index("{"):])


def test_variant_detection(sd15: Path, sdxl: Path, flux: Path) -> None:
    from olivine_diffusers.model import detect_variant

    assert (detect_variant(sd15), detect_variant(sdxl), detect_variant(flux)) == \
        ("sd", "sdxl", "flux")


def test_sdxl_and_flux_dry_runs_take_olives_resolution(cli: Cli, sdxl: Path, flux: Path,
                                                       shapes: Path, tmp_path: Path) -> None:
    for model, variant in ((sdxl, "sdxl"), (flux, "flux")):
        wf = _dry_run(cli, model, shapes, tmp_path, "--model_variant", variant, "-r", "32")
        pre = wf["data_configs"][0]["pre_process_data_config"]
        assert pre == {"type": "image_lora_preprocess", "params": {"base_resolution": 1024}}
        assert wf["passes"]["sd_lora"]["model_variant"] == variant
        assert wf["passes"]["sd_lora"]["r"] == 32
    # auto: no base_resolution in the workflow (the pre-processing's own 512), as Olive
    wf = _dry_run(cli, flux, shapes, tmp_path)
    assert "pre_process_data_config" not in wf["data_configs"][0]


def test_flux_defaults_target_its_attention_layers(flux: Path) -> None:
    from olivine_diffusers.config import FLUX_TARGETS, SD_TARGETS, SDLoRAConfig

    cfg = SDLoRAConfig(train_data_config="d")
    assert cfg.targets("flux") == list(FLUX_TARGETS) and cfg.targets("sdxl") == list(SD_TARGETS)
    assert cfg.lora_alpha() == 16.0 and cfg.args().gradient_accumulation_steps == 4


def _train(cli: Cli, model: Path, images: Path, tmp: Path, *extra: str) -> Path:
    code, _, err = cli("diffusion-lora", "-m", str(model), "-d", str(images), "-o",
                       str(tmp / "out"), "--cache_dir", str(tmp / "cache"),
                       "--base_resolution", "32", "--max_train_steps", "8",
                       "--gradient_accumulation_steps", "1", "--learning_rate", "1e-2",
                       "--seed", "0", "--log_level", "3", *extra)
    assert code == 0, err
    return tmp / "out"


def _image(pipe: Any, **kwargs: Any) -> np.ndarray:
    import torch

    out = pipe("a red square", num_inference_steps=2, height=32, width=32,
               generator=torch.Generator().manual_seed(3), output_type="np", **kwargs)
    return np.asarray(out.images[0], dtype=np.float64)


@pytest.mark.slow
def test_sdxl_trains_in_bf16_and_loads(cli: Cli, sdxl: Path, shapes: Path, tmp_path: Path) -> None:
    """Olive's default mixed precision (bf16) on the CPU; SDXL's size conditioning."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    out = _train(cli, sdxl, shapes, tmp_path)
    rec = json.loads((out / "olivine_training.json").read_text())
    assert rec["variant"] == "sdxl" and rec["weight_dtype"] == "bfloat16"
    _check_olive("sdxl", sdxl, out)
    torch.set_num_threads(1)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl))
    pipe.set_progress_bar_config(disable=True)
    base = _image(pipe, guidance_scale=1.0)
    pipe.load_lora_weights(str(out / "adapter"))
    change = float(np.abs(_image(pipe, guidance_scale=1.0) - base).max())
    pipe.unload_lora_weights()
    # measured: max pixel change 0.42 (training seed 0, 8 steps at 1e-2); unloading gives the
    # base back exactly
    assert change > 0.05, change
    assert np.array_equal(_image(pipe, guidance_scale=1.0), base)


@pytest.mark.slow
def test_flux_trains_and_loads(cli: Cli, flux: Path, shapes: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    out = _train(cli, flux, shapes, tmp_path)
    rec = json.loads((out / "olivine_training.json").read_text())
    assert rec["variant"] == "flux" and rec["weight_dtype"] == "bfloat16"
    _check_olive("flux", flux, out)
    keys = load_file(str(out / "adapter" / "pytorch_lora_weights.safetensors"))
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert any(".add_q_proj." in k for k in keys) and any(".to_add_out." in k for k in keys)
    torch.set_num_threads(1)
    pipe = FluxPipeline.from_pretrained(str(flux))
    pipe.set_progress_bar_config(disable=True)
    base = _image(pipe, max_sequence_length=32)
    pipe.load_lora_weights(str(out / "adapter"))
    change = float(np.abs(_image(pipe, max_sequence_length=32) - base).max())
    pipe.unload_lora_weights()
    # measured: max pixel change 0.031-0.042 (training seed 0, 8 steps at 1e-2, bf16); unloading
    # gives the base back exactly
    assert change > 5e-3, change
    assert np.array_equal(_image(pipe, max_sequence_length=32), base)
