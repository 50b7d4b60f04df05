"""Every flag of Olive 0.13's ``olive diffusion-lora`` (listed in docs/compat/commands-diffusion.yaml)
is one of olivine's, with Olive's short forms and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

COMPAT = Path(__file__).resolve().parents[3] / "docs" / "compat" / "commands-diffusion.yaml"


def _parser() -> argparse.ArgumentParser:
    from olivine_diffusers.cli import configure

    parser = argparse.ArgumentParser(prog="olivine diffusion-lora")
    configure(parser)
    return parser


def test_every_olive_flag_is_accepted() -> None:
    yaml = pytest.importorskip("yaml")
    flags = yaml.safe_load(COMPAT.read_text())["commands"]["diffusion-lora"]["flags"]
    assert len(flags) == 36
    known = {s for a in _parser()._actions for s in a.option_strings}
    missing = [f for f in flags if f not in known]
    assert not missing, missing
    assert {"-m", "-o", "-r", "-d"} <= known


def test_olives_defaults() -> None:
    args = _parser().parse_args(["-m", "x"])
    assert (args.output_path, args.model_variant, args.lora_r, args.alpha, args.lora_dropout) == \
        ("diffusion-lora-adapter", "auto", 16, None, 0.0)
    assert (args.max_train_steps, args.learning_rate, args.train_batch_size,
            args.gradient_accumulation_steps, args.mixed_precision, args.lr_scheduler,
            args.lr_warmup_steps, args.guidance_scale, args.num_class_images,
            args.prior_loss_weight, args.data_split, args.image_column) == \
        (1000, 1e-4, 1, 4, "bf16", "constant", 0, 3.5, 200, 1.0, "train", "image")
