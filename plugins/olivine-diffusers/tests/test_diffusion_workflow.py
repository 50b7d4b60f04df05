"""SDLoRA in workflow form: the config Olive's diffusion-lora writes, and DreamBooth with prior
preservation whose missing class images the base pipeline draws."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., tuple[int, str, str]]


def olive_config(model: Path, images: Path, out: Path, **step: Any) -> dict[str, Any]:
    """What ``olive diffusion-lora -m MODEL -d IMAGES --model_variant sd --dry_run`` writes
    (olive-ai 0.13), less its cache_config (the shared-cache options) and on the CPU."""
    return {
        "input_model": {"type": "DiffusersModel", "model_path": str(model)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [{"device": "cpu"}]}},
        "data_configs": [{
            "name": "train_data", "type": "ImageDataContainer",
            "load_dataset_config": {"type": "image_folder_dataset",
                                    "params": {"data_dir": str(images)}},
            "pre_process_data_config": {"type": "image_lora_preprocess",
                                        "params": {"base_resolution": 512}}}],
        "passes": {"sd_lora": {
            "type": "SDLoRA", "train_data_config": "train_data", "model_variant": "sd", "r": 16,
            "lora_dropout": 0.0, "dreambooth": False, "with_prior_preservation": False,
            "num_class_images": 200, "prior_loss_weight": 1.0, "merge_lora": False,
            "training_args": {"max_train_steps": 1000, "learning_rate": 0.0001,
                              "train_batch_size": 1, "gradient_accumulation_steps": 4,
                              "mixed_precision": "bf16", "lr_scheduler": "constant",
                              "lr_warmup_steps": 0, "seed": 3, "guidance_scale": 3.5},
            **step}},
        "host": "local_system", "target": "local_system", "no_artifacts": True,
        "output_dir": str(out), "log_severity_level": 3,
    }


def test_olives_generated_config_validates(sd15: Path, shapes: Path, tmp_path: Path) -> None:
    from olivine import validate

    validate(olive_config(sd15, shapes, tmp_path / "out"))


@pytest.mark.slow
def test_dreambooth_with_prior_preservation(cli: Cli, sd15: Path, shapes: Path,
                                            tmp_path: Path) -> None:
    """Instance prompt, class images (one given, two drawn by the base pipeline into the class
    folder), image_resizing into an output_dir, Min-SNR weighting and a cosine schedule."""
    from PIL import Image

    classes = tmp_path / "classes"
    classes.mkdir()
    Image.new("RGB", (40, 40), (0, 160, 0)).save(classes / "given.png")
    resized = tmp_path / "resized"
    cfg = olive_config(sd15, shapes, tmp_path / "out", dreambooth=True,
                       instance_prompt="a sks square", with_prior_preservation=True,
                       class_prompt="a square", class_data_dir=str(classes), num_class_images=3,
                       prior_loss_weight=0.5)
    cfg["data_configs"][0]["pre_process_data_config"]["params"] = {
        "steps": {"image_resizing": {"target_resolution": 32, "output_dir": str(resized)}}}
    cfg["passes"]["sd_lora"]["training_args"].update(
        max_train_steps=4, gradient_accumulation_steps=2, learning_rate=1e-2,
        mixed_precision="no", lr_scheduler="cosine", lr_warmup_steps=1, snr_gamma=5.0)
    cfg["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    code, _, err = cli("run", "--config", str(path))
    assert code == 0, err
    assert sorted(p.name for p in classes.glob("*.png")) == ["class_0001.png", "class_0002.png",
                                                           "given.png"]
    # image_resizing keeps the source names in output_dir, as Olive's does
    assert sorted(p.name for p in resized.glob("*.png")) == [f"img{i}.png" for i in range(4)]
    assert all(Image.open(p).size == (32, 32) for p in resized.glob("*.png"))
    assert all(Image.open(p).size == (32, 32) for p in shapes.glob("*.png"))  # sources untouched
    rec = json.loads((tmp_path / "out" / "olivine_training.json").read_text())
    assert rec["steps"] == 4 and rec["epochs"] == 2  # 4 images, accumulation 2: 2 steps/epoch
    assert (tmp_path / "out" / "adapter" / "pytorch_lora_weights.safetensors").is_file()
