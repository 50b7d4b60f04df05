"""``olivine diffusion-lora``: Olive's command, its flags and defaults, on olivine's engine.

The flags become an Olive-style workflow (a ``DiffusersModel`` input, an
``ImageDataContainer`` data config, one ``SDLoRA`` step), run like ``olivine run``;
``--dry_run`` prints it, ``--save_config`` writes it. What a user can get wrong (the
pipeline folder, the image folder, the DreamBooth flags) is checked before anything loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from olivine import ConfigError, UsageError

NAME = "diffusion-lora"
HELP = "train a LoRA adapter for a diffusion pipeline (SD 1.5, SDXL, Flux) on a folder of images"
VARIANTS = ("auto", "sd", "sdxl", "sd3", "flux", "sana")
SCHEDULERS = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "constant_with_warmup")


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine diffusion-lora`` (Olive 0.13's names and defaults)."""
    from olivine.commands import add_cache_dir, add_dry_run, add_log_level, add_save_config

    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model", required=True,
                   help="a diffusers pipeline folder (with model_index.json) or a hub id")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path",
                   default="diffusion-lora-adapter",
                   help="output folder (default: diffusion-lora-adapter)")
    p.add_argument("--model_variant", choices=VARIANTS, default="auto",
                   help="sd, sdxl or flux (default: auto, read from the pipeline's configs)")
    lora = p.add_argument_group("LoRA options")
    lora.add_argument("-r", "--lora_r", type=int, default=16,
                      help="LoRA rank (default 16; SD 4-16, Flux 16-64)")
    lora.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    lora.add_argument("--lora_dropout", type=float, default=0.0, help="default 0.0")
    lora.add_argument("--target_modules", default=None,
                      help="comma-separated layer names (default: to_k,to_q,to_v,to_out.0; Flux "
                           "adds add_k_proj,add_q_proj,add_v_proj,to_add_out)")
    db = p.add_argument_group("DreamBooth options")
    db.add_argument("--dreambooth", action="store_true",
                    help="learn a subject: every image gets --instance_prompt as its caption")
    db.add_argument("--instance_prompt", default=None,
                    help="required with --dreambooth, e.g. 'a photo of sks dog'")
    db.add_argument("--with_prior_preservation", action="store_true",
                    help="add the prior-preservation loss (needs --class_prompt)")
    db.add_argument("--class_prompt", default=None, help="e.g. 'a photo of a dog'")
    db.add_argument("--class_data_dir", default=None,
                    help="class images; missing ones (up to --num_class_images) are generated "
                         "into it by the base pipeline")
    db.add_argument("--num_class_images", type=int, default=200, help="default 200")
    db.add_argument("--prior_loss_weight", type=float, default=1.0, help="default 1.0")
    data = p.add_argument_group("Data options")
    data.add_argument("-d", "--data_dir", default=None,
                      help="folder of training images; IMAGE.txt beside IMAGE.png is its caption")
    data.add_argument("--data_name", default=None,
                      help="a hub image dataset (not supported by olivine: use --data_dir)")
    data.add_argument("--data_split", default="train", help="hub dataset split (default: train)")
    data.add_argument("--image_column", default="image", help="hub dataset image column")
    data.add_argument("--caption_column", default=None, help="hub dataset caption column")
    data.add_argument("--base_resolution", type=int, default=None,
                      help="training resolution (default: 512 for sd, 1024 for sdxl and flux; "
                           "with --model_variant auto, the pre-processing's 512)")
    train = p.add_argument_group("Training options")
    train.add_argument("--max_train_steps", type=int, default=1000, help="default 1000")
    train.add_argument("--learning_rate", type=float, default=1e-4, help="default 1e-4")
    train.add_argument("--train_batch_size", type=int, default=1, help="default 1")
    train.add_argument("--gradient_accumulation_steps", type=int, default=4, help="default 4")
    train.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="bf16",
                       help="default bf16 (fp16 needs a CUDA GPU)")
    train.add_argument("--lr_scheduler", choices=SCHEDULERS, default="constant",
                       help="default constant")
    train.add_argument("--lr_warmup_steps", type=int, default=0, help="default 0")
    train.add_argument("--seed", type=int, default=None, help="random seed (default: none)")
    flux = p.add_argument_group("Flux options")
    flux.add_argument("--guidance_scale", type=float, default=3.5, help="default 3.5")
    p.add_argument("--merge_lora", action="store_true",
                   help="save the UNet/transformer with the LoRA merged in instead of the adapter")
    cache = p.add_argument_group("shared cache (Olive's Azure flags; not supported here)")
    cache.add_argument("--account_name", default=None, help=argparse.SUPPRESS)
    cache.add_argument("--container_name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--disable_telemetry", action="store_true",
                   help="accepted for Olive's scripts; olivine sends no telemetry")
    add_cache_dir(p)
    add_save_config(p)
    add_dry_run(p)
    add_log_level(p)


def _resolution(args: argparse.Namespace) -> int | None:
    if args.base_resolution is not None:
        return int(args.base_resolution)
    return {"sdxl": 1024, "flux": 1024, "sd": 512}.get(args.model_variant)


def workflow_of(args: argparse.Namespace, model_path: str, data_dir: str) -> dict[str, Any]:
    """The workflow of the flags: Olive's template (one ``SDLoRA`` step named ``sd_lora``)."""
    from olivine.commands import cache_dir

    data: dict[str, Any] = {"name": "train_data", "type": "ImageDataContainer",
                            "load_dataset_config": {"type": "image_folder_dataset",
                                                    "params": {"data_dir": data_dir}}}
    resolution = _resolution(args)
    if resolution is not None:
        data["pre_process_data_config"] = {"type": "image_lora_preprocess",
                                           "params": {"base_resolution": resolution}}
    step: dict[str, Any] = {
        "type": "SDLoRA", "train_data_config": "train_data", "model_variant": args.model_variant,
        "r": args.lora_r, "alpha": args.alpha, "lora_dropout": args.lora_dropout,
        "dreambooth": args.dreambooth, "instance_prompt": args.instance_prompt,
        "with_prior_preservation": args.with_prior_preservation,
        "class_prompt": args.class_prompt, "class_data_dir": args.class_data_dir,
        "num_class_images": args.num_class_images, "prior_loss_weight": args.prior_loss_weight,
        "merge_lora": args.merge_lora,
        "training_args": {
            "max_train_steps": args.max_train_steps, "learning_rate": args.learning_rate,
            "train_batch_size": args.train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "mixed_precision": args.mixed_precision, "lr_scheduler": args.lr_scheduler,
            "lr_warmup_steps": args.lr_warmup_steps, "seed": args.seed,
            "guidance_scale": args.guidance_scale},
    }
    if args.target_modules:
        step["target_modules"] = [t.strip() for t in args.target_modules.split(",") if t.strip()]
    if args.class_data_dir:
        step["class_data_dir"] = str(Path(args.class_data_dir).expanduser().resolve())
    step = {k: v for k, v in step.items() if v is not None}
    step["training_args"] = {k: v for k, v in step["training_args"].items() if v is not None}
    return {
        "workflow_id": "diffusion-lora",
        "input_model": {"type": "DiffusersModel", "model_path": model_path},
        "data_configs": [data],
        "passes": {"sd_lora": step},
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir(args.cache_dir)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


#: pass options whose flags have other names
FLAG_NAMES = {"r": "lora_r", "model_path": "model_name_or_path"}


def _check_flags(step: dict[str, Any]) -> None:
    """Build the pass config now, so a bad value is an error naming its flag."""
    from olivine_diffusers.config import SDLoRAConfig

    try:
        SDLoRAConfig(**{k: v for k, v in step.items() if k != "type"})
    except (ValueError, TypeError) as exc:
        field, _, message = str(exc).partition(": ")
        raise UsageError(f"--{FLAG_NAMES.get(field, field)}: {message}") from None


def _preflight(args: argparse.Namespace, workflow: dict[str, Any]) -> None:
    """Read the image folder through the data components (bad images fail in a second)."""
    from olivine_diffusers.data import image_folder_dataset, image_lora_preprocess

    try:
        images = image_folder_dataset(args.data_dir)
        resolution = _resolution(args) or 512
        image_lora_preprocess(images, base_resolution=resolution)
    except UsageError as exc:
        raise UsageError(f"--data_dir: {exc}".replace("--data_dir: data_dir: ", "--data_dir: ")
                         ) from None


def _preflight_targets(model_path: str, step: dict[str, Any]) -> None:
    """Target modules that match no layer of a local pipeline's denoiser fail now (the model is
    built from its config on torch's meta device: no weights are read)."""
    from olivine_diffusers.config import SDLoRAConfig
    from olivine_diffusers.model import detect_variant

    folder = Path(model_path)
    variant = step.get("model_variant", "auto")
    variant = detect_variant(folder) if variant == "auto" else variant
    if not folder.is_dir() or variant not in ("sd", "sdxl", "flux"):
        return
    import diffusers
    import torch

    sub, cls_name = ("transformer", "FluxTransformer2DModel") if variant == "flux" else \
        ("unet", "UNet2DConditionModel")
    cls = getattr(diffusers, cls_name)
    try:
        with torch.device("meta"):
            denoiser = cls.from_config(cls.load_config(str(folder), subfolder=sub))
    except (OSError, ValueError, TypeError):
        return  # the pass reports a component it cannot load
    config = SDLoRAConfig(**{k: v for k, v in step.items() if k != "type"})
    names = [n for n, m in denoiser.named_modules() if isinstance(m, torch.nn.Linear)]
    for target in config.targets(variant):
        if not any(n == target or n.endswith("." + target) for n in names):
            short = sorted({n.rsplit(".", 1)[-1] if not n.endswith(".0") else
                            ".".join(n.rsplit(".", 2)[-2:]) for n in names})
            raise UsageError(f"--target_modules: {target!r} matches no linear layer of the "
                             f"{cls_name}; its linear layers are named {', '.join(short[:24])}")


def run_command(args: argparse.Namespace) -> int:
    """``olivine diffusion-lora``: the output folder holds ``adapter/`` and the training record."""
    from olivine import check_output_dir
    from olivine.commands import run_generated
    from olivine_diffusers.model import pipeline_path

    if args.account_name or args.container_name:
        raise UsageError("--account_name/--container_name: Olive's Azure shared cache is not "
                         "supported by olivine diffusion-lora; leave them out (the local "
                         "--cache_dir is used)")
    if args.data_name:
        raise UsageError("--data_name: hub image datasets are not supported by olivine "
                         "diffusion-lora; download the images into a folder (captions as .txt "
                         "files beside them) and give it as --data_dir")
    if not args.data_dir:
        raise UsageError("give the images: --data_dir FOLDER (images, with IMAGE.txt captions "
                         "beside them)")
    try:
        model_path = pipeline_path(args.model, Path.cwd(), "--model_name_or_path")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.class_data_dir and Path(args.class_data_dir).expanduser().is_file():
        raise UsageError(f"--class_data_dir: {args.class_data_dir!r} is a file; give a folder")
    data_dir = Path(args.data_dir).expanduser()
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir: no such folder {args.data_dir!r}")
    workflow = workflow_of(args, model_path, str(data_dir.resolve()))
    _check_flags(workflow["passes"]["sd_lora"])
    _preflight(args, workflow)
    if args.target_modules:
        _preflight_targets(model_path, workflow["passes"]["sd_lora"])
    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config,
                           before_run=lambda: check_output_dir(Path(workflow["output_dir"])))
    if result is None:
        return 0
    if workflow["log_severity_level"] < 4:
        _print_result(Path(result.output_dir), args.merge_lora)
    return 0


def _print_result(out: Path, merged: bool) -> None:
    record_file = out / "olivine_training.json"
    if record_file.is_file():
        rec = json.loads(record_file.read_text())
        line = f"  trained {rec['steps']} steps on {rec['images']} images in {rec['seconds']:.1f} s"
        if rec.get("first_loss") is not None:
            line += f", loss {rec['first_loss']:.4f} -> {rec['last_loss']:.4f}"
        if rec.get("fixed_noise_loss_before") is not None:
            line += (f"; fixed-noise loss {rec['fixed_noise_loss_before']:.4f} -> "
                     f"{rec['fixed_noise_loss_after']:.4f}")
        print(line)
    if merged:
        print(f"  merged denoiser: {out / 'adapter'}")
    else:
        print(f"  adapter: {out / 'adapter'} (pipe.load_lora_weights({str(out / 'adapter')!r}))")
