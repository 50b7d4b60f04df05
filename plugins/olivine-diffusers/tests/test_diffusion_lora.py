"""``olivine diffusion-lora`` on a tiny SD 1.5 pipeline: the adapter trains, loads back into
diffusers and changes what the pipeline draws; without it the base comes back exactly."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers_tiny import fingerprint

from olivine.testing import record_quality

Cli = Callable[..., tuple[int, str, str]]
PROMPT = "a red square"


def train_args(model: Path, images: Path, tmp: Path, *extra: str) -> list[str]:
    """A short, fast training: 20 optimizer steps of one image, float32, a high learning rate."""
    return ["diffusion-lora", "-m", str(model), "-d", str(images), "-o", str(tmp / "out"),
            "--cache_dir", str(tmp / "cache"), "--base_resolution", "32",
            "--max_train_steps", "20", "--gradient_accumulation_steps", "1",
            "--learning_rate", "1e-2", "--mixed_precision", "no", "--seed", "0",
            "--log_level", "3", *extra]


def draw(pipe: Any, seed: int = 7) -> np.ndarray:
    """Two denoising steps at 32x32 from a fixed seed, as a float array."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = pipe(PROMPT, num_inference_steps=2, height=32, width=32, generator=gen,
               guidance_scale=1.0, output_type="np")
    return np.asarray(out.images[0], dtype=np.float64)


@pytest.fixture(scope="module")
def trained(sd15: Path, shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one diffusion-lora run on the tiny SD 1.5 pipeline."""
    from olivine.testing import cli_main as main

    tmp = tmp_path_factory.mktemp("sd15-run")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(train_args(sd15, shapes, tmp)) == 0
    (tmp / "stderr.txt").write_text(err.getvalue())
    (tmp / "stdout.txt").write_text(out.getvalue())
    return tmp / "out"


def test_progress_and_summary_are_shown(trained: Path) -> None:
    err = (trained.parent / "stderr.txt").read_text()
    out = (trained.parent / "stdout.txt").read_text()
    assert "sd_lora: " in err and "% loss " in err and "100% loss" in err
    assert "trained 20 steps on 4 images" in out and "fixed-noise loss" in out
    assert f"adapter: {trained / 'adapter'}" in out


def test_adapter_is_written_as_olive_writes_it(trained: Path) -> None:
    from safetensors.torch import load_file

    weights = trained / "adapter" / "pytorch_lora_weights.safetensors"
    tensors = load_file(str(weights))
    # diffusers' format: unet.<module>.lora_A/B.weight, for Olive's four attention targets
    assert tensors and all(k.startswith("unet.") for k in tensors)
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in tensors}
    assert targets == {"to_k", "to_q", "to_v", "0"}  # to_out.0 ends in "0"
    ranks = {t.shape[0] for k, t in tensors.items() if ".lora_A." in k}
    assert ranks == {16}  # Olive's default rank
    report = json.loads((trained / "run.json").read_text())
    assert report["output_model"]["kind"] == "adapter"


def test_adapter_changes_the_pipeline_and_unloading_restores_it(sd15: Path, trained: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(sd15))
    pipe.set_progress_bar_config(disable=True)
    base = draw(pipe)
    assert np.array_equal(base, draw(pipe))  # same seed, same image
    pipe.load_lora_weights(str(trained / "adapter"))
    with_lora = draw(pipe)
    pipe.unload_lora_weights()
    again = draw(pipe)
    change = float(np.abs(with_lora - base).max())
    # measured: max pixel change 0.26-0.29 (of 1.0) over training seeds 0-3; the base after
    # unloading equals the base exactly
    assert change > 0.05, change
    np.testing.assert_allclose(again, base, atol=1e-6)
    record_quality("diffusion-lora adapter changes the image", change=change)


#: Olive 0.13 as the oracle: olive-ai 0.13.0's SDLoRA (with diffusers 0.42.1, peft 0.21.2,
#: accelerate 1.15.0, torch 2.13.0 CPU) run as a workflow on the pipeline sd15_pipeline(seed 0)
#: builds, the same four images (image_resizing to 32) and the training_args of train_args()
#: (20 steps, learning rate 1e-2, accumulation 1, mixed precision no, seed 0). Fingerprints:
#: sha256 over sorted tensor names and bytes, first 16 hex digits.
OLIVE_PIPELINE = "fed653f087402646"
OLIVE_ADAPTER = "0b683502064a36d8"
#: the CPU vendor the oracle ran on (an Intel Xeon): training rounds differently on another
#: vendor's CPU (an AMD EPYC trains adapter 1640c74574c501ff from the same pipeline), so the
#: bit-for-bit claim is checked where it was recorded
OLIVE_CPU_VENDOR = "GenuineIntel"


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def test_adapter_equals_olives(sd15: Path, trained: Path) -> None:
    """Same seed, same data, same options: bit for bit the adapter Olive 0.13 trains."""
    if fingerprint(sorted(sd15.glob("*/*.safetensors"))) != OLIVE_PIPELINE:
        pytest.skip("this torch/diffusers builds another tiny pipeline than the one Olive was "
                    "run on")
    if cpu_vendor() != OLIVE_CPU_VENDOR:
        pytest.skip(f"Olive's adapter was recorded on a {OLIVE_CPU_VENDOR} CPU; this "
                    f"{cpu_vendor() or 'unknown'} CPU's kernels round the training differently")
    assert fingerprint([trained / "adapter" / "pytorch_lora_weights.safetensors"]) == \
        OLIVE_ADAPTER


def test_loss_goes_down(trained: Path) -> None:
    rec = json.loads((trained / "olivine_training.json").read_text())
    assert rec["steps"] == 20 and len(rec["losses"]) == 20 and rec["epochs"] == 5
    before, after = rec["fixed_noise_loss_before"], rec["fixed_noise_loss_after"]
    # fixed noise and timesteps on the 4 training images; measured: after/before 0.899-0.914
    # over training seeds 0-3 (20 steps at 1e-2)
    assert after < 0.95 * before, (before, after)
    record_quality("diffusion-lora fixed-noise loss", before=before, after=after)


def test_cached_rerun_and_dry_run(sd15: Path, shapes: Path, trained: Path, cli: Cli,
                                  tmp_path: Path) -> None:
    args = train_args(sd15, shapes, tmp_path)
    args[args.index("--cache_dir") + 1] = str(trained.parent / "cache")
    code, out, err = cli(*args, "--dry_run")
    assert code == 0, err
    workflow = json.loads(out[out.index("{"):])
    step = workflow["passes"]["sd_lora"]
    assert step["type"] == "SDLoRA" and step["r"] == 16 and step["lora_dropout"] == 0.0
    assert step["training_args"]["gradient_accumulation_steps"] == 1
    assert workflow["input_model"] == {"type": "DiffusersModel", "model_path": str(sd15)}
    assert workflow["data_configs"][0]["type"] == "ImageDataContainer"
    assert not (tmp_path / "out").exists()
    # the same flags again: the step comes from the cache, the adapter is the same file
    code, _, err = cli(*args)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["cached"], report["steps"]
    name = "adapter/pytorch_lora_weights.safetensors"
    assert (tmp_path / "out" / name).read_bytes() == (trained / name).read_bytes()


@pytest.mark.slow
def test_merge_lora_equals_loaded_adapter(sd15: Path, shapes: Path, trained: Path,
                                          tmp_path: Path) -> None:
    """The merged UNet draws what the base pipeline with the adapter loaded draws."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from olivine.testing import cli_main as main

    assert main(train_args(sd15, shapes, tmp_path, "--merge_lora")) == 0
    merged_dir = tmp_path / "out" / "adapter"
    assert (merged_dir / "config.json").is_file()
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(sd15))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(trained / "adapter"))
    with_lora = draw(pipe)
    merged = StableDiffusionPipeline.from_pretrained(
        str(sd15), unet=UNet2DConditionModel.from_pretrained(str(merged_dir)))
    merged.set_progress_bar_config(disable=True)
    # the same seed trains the same LoRA; folding it in changes only float rounding
    np.testing.assert_allclose(draw(merged), with_lora, atol=1e-4)
