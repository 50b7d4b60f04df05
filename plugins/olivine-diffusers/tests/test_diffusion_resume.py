"""A training step killed after a checkpoint resumes from it and ends with the same adapter as
an uninterrupted run (the checkpoint holds weights, optimizer, schedule, RNG and data order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class Killed(Exception):
    """Raised from the progress callback: the run dies after this optimizer step."""


def _train(model: Path, images: Path, work: Path, state: Path, kill_at: int | None = None) -> Any:
    from olivine import Accelerator, PassContext
    from olivine_diffusers.config import SDLoRAConfig
    from olivine_diffusers.data import image_folder_dataset, image_lora_preprocess
    from olivine_diffusers.train import train_lora

    def progress(done: float, total: float | None, message: str) -> None:
        if kill_at is not None and done == kill_at:
            raise Killed(message)

    config = SDLoRAConfig(train_data_config="d", training_args={
        "max_train_steps": 5, "gradient_accumulation_steps": 1, "learning_rate": 1e-2,
        "mixed_precision": "no", "checkpointing_steps": 2, "seed": None})
    dataset = image_lora_preprocess(image_folder_dataset(str(images)), base_resolution=32)
    work.mkdir(parents=True, exist_ok=True)
    context = PassContext(work_dir=work, step_name="sd_lora", accelerator=Accelerator(),
                          state_dir=state, progress_fn=progress)
    return train_lora(str(model), "sd", config, dataset, [], context)


def test_killed_training_resumes_to_the_same_adapter(sd15: Path, shapes: Path,
                                                     tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.manual_seed(11)  # no training seed: the order and noise come from torch's RNG
    whole = _train(sd15, shapes, tmp_path / "a", tmp_path / "state-a")
    state = tmp_path / "state-b"
    torch.manual_seed(11)
    with pytest.raises(Killed):
        _train(sd15, shapes, tmp_path / "b", state, kill_at=3)
    assert (state / "sd_lora_checkpoint.pt").is_file()  # written at step 2
    torch.manual_seed(99)  # the resumed run takes the RNG from the checkpoint
    resumed = _train(sd15, shapes, tmp_path / "c", state)
    assert resumed["losses"][:2] == whole["losses"][:2]
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5)
    a = load_file(str(tmp_path / "a" / "adapter" / "pytorch_lora_weights.safetensors"))
    c = load_file(str(tmp_path / "c" / "adapter" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == c.keys()
    for key in a:
        torch.testing.assert_close(c[key], a[key], rtol=1e-5, atol=1e-7)
