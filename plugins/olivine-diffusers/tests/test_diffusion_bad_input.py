"""Bad input to diffusion-lora and SDLoRA: exit 2 (or a config error) naming the flag, key or file,
before anything loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[..., tuple[int, str, str]]


def _run(cli: Cli, model: Path | str, images: Path | str, tmp: Path, *extra: str
         ) -> tuple[int, str, str]:
    return cli("diffusion-lora", "-m", str(model), "-d", str(images), "-o", str(tmp / "out"),
               "--cache_dir", str(tmp / "cache"), "--log_level", "3", *extra)


def test_model_folder_without_model_index(cli: Cli, shapes: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notapipe"
    folder.mkdir()
    code, _, err = _run(cli, folder, shapes, tmp_path)
    assert code == 2
    assert "--model_name_or_path" in err and "has no model_index.json" in err
    assert "Traceback" not in err


def test_missing_model_path(cli: Cli, shapes: Path, tmp_path: Path) -> None:
    code, _, err = _run(cli, tmp_path / "nowhere" / "pipe", shapes, tmp_path)
    assert code == 2 and "--model_name_or_path: no such folder" in err


def test_missing_and_empty_image_folders(cli: Cli, sd15: Path, tmp_path: Path) -> None:
    code, _, err = _run(cli, sd15, tmp_path / "nope", tmp_path)
    assert code == 2 and "--data_dir: no such folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, _, err = _run(cli, sd15, empty, tmp_path)
    assert code == 2 and "--data_dir" in err and "holds no images" in err


def test_unreadable_image(cli: Cli, sd15: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    code, _, err = _run(cli, sd15, folder, tmp_path)
    assert code == 2 and "broken.png" in err and "cannot be read" in err


def test_no_data_and_hub_data(cli: Cli, sd15: Path, tmp_path: Path) -> None:
    code, _, err = cli("diffusion-lora", "-m", str(sd15), "-o", str(tmp_path / "o"))
    assert code == 2 and "--data_dir" in err
    code, _, err = cli("diffusion-lora", "-m", str(sd15), "--data_name", "linoyts/Tuxemon",
                       "-o", str(tmp_path / "o"))
    assert code == 2 and "--data_name" in err


@pytest.mark.parametrize(("flags", "named"), [
    (["--dreambooth"], "--instance_prompt"),
    (["--with_prior_preservation"], "--with_prior_preservation"),
    (["--dreambooth", "--instance_prompt", "sks", "--with_prior_preservation"], "--class_prompt"),
    (["--lora_r", "0"], "--lora_r"),
    (["--learning_rate", "0"], "--learning_rate"),
    (["--lora_dropout", "1.5"], "--lora_dropout"),
    (["--model_variant", "sd3"], "--model_variant"),
    (["--account_name", "acct"], "--account_name"),
])
def test_bad_flags_name_the_flag(cli: Cli, sd15: Path, shapes: Path, tmp_path: Path,
                                 flags: list[str], named: str) -> None:
    code, _, err = _run(cli, sd15, shapes, tmp_path, *flags)
    assert code == 2, err
    assert named in err, err
    assert not (tmp_path / "out").exists()


def test_target_modules_that_match_nothing(cli: Cli, sd15: Path, shapes: Path,
                                           tmp_path: Path) -> None:
    code, _, err = _run(cli, sd15, shapes, tmp_path, "--target_modules", "q_proj,v_proj",
                        "--max_train_steps", "1", "--base_resolution", "32")
    assert code == 2
    assert "--target_modules: 'q_proj' matches no linear layer of the UNet2DConditionModel" in err
    assert "to_q" in err  # lists the UNet's real layer names
    assert not (tmp_path / "out").exists()


def _workflow(model: Path, images: Path, tmp: Path, **step: object) -> dict[str, object]:
    return {"input_model": {"type": "DiffusersModel", "model_path": str(model)},
            "data_configs": [{"name": "imgs", "type": "ImageDataContainer",
                              "load_dataset_config": {"type": "image_folder_dataset",
                                                      "params": {"data_dir": str(images)}}}],
            "passes": {"sd_lora": {"type": "SDLoRA", "train_data_config": "imgs", **step}},
            "output_dir": str(tmp / "out"), "cache_dir": str(tmp / "cache")}


@pytest.mark.parametrize(("step", "path"), [
    ({"rank": 4}, "passes.sd_lora.rank"),
    ({"training_args": {"max_steps": 3}}, "passes.sd_lora.training_args.max_steps"),
    ({"training_args": {"mixed_precision": "fp8"}}, "passes.sd_lora.training_args.mixed_precision"),
    ({"model_variant": "sd2"}, "passes.sd_lora.model_variant"),
])
def test_workflow_options_are_checked(sd15: Path, shapes: Path, tmp_path: Path,
                                      step: dict[str, object], path: str) -> None:
    from olivine import ConfigError, validate

    with pytest.raises(ConfigError) as info:
        validate(_workflow(sd15, shapes, tmp_path, **step))
    assert path in str(info.value)


def test_workflow_input_model_is_checked(shapes: Path, tmp_path: Path) -> None:
    from olivine import ConfigError, validate

    cfg = _workflow(tmp_path, shapes, tmp_path)
    cfg["input_model"] = {"type": "DiffusersModel", "model_path": str(tmp_path), "revision": "x"}
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "revision" in str(info.value)
    cfg["input_model"] = {"type": "DiffusersModel", "model_path": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "model_index.json" in str(info.value)


def test_unknown_preprocess_step_and_caption_models(cli: Cli, sd15: Path, shapes: Path,
                                                    tmp_path: Path) -> None:
    cfg = _workflow(sd15, shapes, tmp_path, training_args={"max_train_steps": 1})
    cfg["data_configs"][0]["pre_process_data_config"] = {  # type: ignore[index]
        "type": "image_lora_preprocess", "params": {"steps": {"auto_caption": {}}}}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    code, _, err = cli("run", "--config", str(path))
    assert code != 0 and "auto_caption" in err and ".txt caption" in err
