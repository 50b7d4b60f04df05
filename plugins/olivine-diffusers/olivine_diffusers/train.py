"""Training a LoRA on a diffusion pipeline's denoiser (Olive's ``SDLoRA`` loop, without accelerate).

SD 1.5 and SDXL train the UNet on epsilon / v-prediction noise targets; Flux trains its
transformer with flow matching. The text encoders and the VAE stay frozen. The loop follows
Olive's: frozen weights in the mixed-precision dtype, LoRA weights in float32, AdamW
(weight decay 1e-2), diffusers' schedules, gradient clipping, gradient accumulation.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from olivine import PassContext, UsageError
from olivine_diffusers.components import Components, load_components
from olivine_diffusers.config import SDLoRAConfig
from olivine_diffusers.data import ImageFolder, load_pixels

#: images whose fixed-noise loss is measured before and after training
PROBE_IMAGES = 8


def pick_device() -> Any:
    """CUDA when there is a GPU, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def weight_dtype(mixed_precision: str, variant: str, device: Any) -> Any:
    """The frozen weights' dtype (Olive: the mixed-precision dtype; Flux always bfloat16)."""
    import torch

    if mixed_precision == "fp16" and device.type != "cuda":
        raise UsageError("training_args.mixed_precision: fp16 needs a CUDA GPU (there is none "
                         "here); use bf16 (the default) or no")
    if variant == "flux":
        return torch.bfloat16
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def seed_all(seed: int | None) -> None:
    """Seed Python, numpy and torch (no-op for ``None``)."""
    if seed is None:
        return
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bucket_batches(dataset: ImageFolder, batch_size: int, seed: int | None, epoch: int
                   ) -> list[list[int]]:
    """Olive's bucket batch sampler: batches of one bucket size, shuffled within and across."""
    import torch

    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(dataset.items):
        bucket = tuple(dataset.bucket_assignments[item["image_path"]]["bucket"])
        groups.setdefault((int(bucket[0]), int(bucket[1])), []).append(i)
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed + epoch)
    batches: list[list[int]] = []
    for indices in groups.values():
        order = torch.randperm(len(indices), generator=gen).tolist()
        shuffled = [indices[i] for i in order]
        batches += [shuffled[i:i + batch_size] for i in range(0, len(shuffled), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def collate(dataset: ImageFolder, indices: list[int], config: SDLoRAConfig,
            class_images: list[str], class_cursor: list[int]) -> dict[str, Any]:
    """Pixels, captions and SDXL's size conditioning of one batch (+ class images)."""
    import torch
    from PIL import Image

    from olivine_diffusers.data import resize_to

    pixels, captions, originals, targets, crops = [], [], [], [], []
    for i in indices:
        item = dataset.items[i]
        assignment = dataset.bucket_assignments[item["image_path"]]
        pixels.append(load_pixels(item["image_path"], assignment))
        captions.append(config.instance_prompt or item["caption"])
        originals.append(tuple(assignment["original_size"]))
        targets.append(tuple(assignment["bucket"]))
        crops.append(tuple(assignment["crops_coords_top_left"]))
    if config.with_prior_preservation and class_images:
        import numpy as np

        for _ in indices:
            path = class_images[class_cursor[0] % len(class_images)]
            class_cursor[0] += 1
            with Image.open(path) as img:
                rgb = img.convert("RGB")
            size = rgb.size
            rgb = resize_to(rgb, targets[0], {"resize_mode": "cover"}) if size != targets[0] else rgb
            array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
            pixels.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
            captions.append(config.class_prompt or "")
            originals.append(size)
            targets.append(targets[0])
            crops.append((0, 0))
    return {"pixel_values": torch.stack(pixels).float(), "captions": captions,
            "original_sizes": originals, "target_sizes": targets, "crops": crops}


def _lr_scheduler(name: str, optimizer: Any, warmup: int, total: int) -> Any:
    from diffusers.optimization import get_scheduler

    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup,
                         num_training_steps=total)


def add_lora(parts: Components, config: SDLoRAConfig, variant: str) -> list[Any]:
    """Add the LoRA to the denoiser; its float32 trainable parameters."""
    import torch
    from peft import LoraConfig

    targets = config.targets(variant)
    alpha: Any = config.lora_alpha()  # Olive's alpha is a float; peft scales by alpha / r
    lora = LoraConfig(r=config.r, lora_alpha=alpha, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=targets)
    try:
        parts.denoiser.add_adapter(lora)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in parts.denoiser.named_modules()
                        if isinstance(m, torch.nn.Linear)})
        raise UsageError(f"target_modules: {', '.join(targets)} match no layer of the "
                         f"{type(parts.denoiser).__name__} ({exc}); its linear layers are named "
                         f"{', '.join(names[:20])}") from None
    params = [p for p in parts.denoiser.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.to(torch.float32)
    return params


def train_lora(model_path: str, variant: str, config: SDLoRAConfig, dataset: ImageFolder,
               class_images: list[str], context: PassContext,
               load_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train; write ``adapter/`` (or the merged denoiser) and ``olivine_training.json`` into
    ``context.work_dir``; return the training record."""
    import torch

    from olivine_diffusers.steps import DenoiseStep

    args = config.args()
    device = pick_device()
    dtype = weight_dtype(args.mixed_precision, variant, device)
    seed_all(args.seed)
    context.progress(0, args.max_train_steps, f"loading the {variant} pipeline")
    parts = load_components(model_path, variant, device, dtype, load_kwargs)
    params = add_lora(parts, config, variant)
    total = sum(p.numel() for p in parts.denoiser.parameters())
    trainable = sum(p.numel() for p in params)
    context.logger.info("%s: %d of %d parameters trainable (%.2f%%)",
                        type(parts.denoiser).__name__, trainable, total, 100 * trainable / total)
    if args.gradient_checkpointing:
        parts.denoiser.enable_gradient_checkpointing()
    step_fn = DenoiseStep(parts, variant, config, dtype, device)
    probe = _probe_batches(dataset, config, class_images)
    probe_before = step_fn.fixed_loss(probe)

    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    scheduler = _lr_scheduler(args.lr_scheduler, optimizer, args.lr_warmup_steps,
                              args.max_train_steps)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=args.mixed_precision != "no"
                              or variant == "flux")
    accum = args.gradient_accumulation_steps
    ckpt = Path(context.state_dir) / CHECKPOINT if context.state_dir else None
    state = _resume(ckpt, params, optimizer, scheduler, context)
    losses: list[float] = state["losses"]
    class_cursor = [state["class_cursor"]]
    step, epoch, started = state["step"], state["epoch"], time.perf_counter()
    parts.denoiser.train()
    while step < args.max_train_steps:
        batches = state.pop("batches", None) or bucket_batches(dataset, args.train_batch_size,
                                                               args.seed, epoch)
        if not state.get("next_batch"):
            # a torch DataLoader draws its workers' base seed from the global RNG as each epoch
            # starts; drawing it too keeps a seeded run's noise equal to Olive's
            torch.empty((), dtype=torch.int64).random_()
        window: list[float] = []
        for k, indices in enumerate(batches):
            if k < state.get("next_batch", 0):
                continue
            batch = collate(dataset, indices, config, class_images, class_cursor)
            with autocast:
                loss = step_fn.loss(batch)
            (loss / accum).backward()
            window.append(float(loss.detach()))
            if len(window) < accum and k < len(batches) - 1:
                continue
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            losses.append(sum(window) / len(window))
            window = []
            context.progress(step, args.max_train_steps, f"loss {losses[-1]:.4f}")
            if step % args.logging_steps == 0:
                context.logger.info("step %d: loss=%.4f, lr=%.6g", step, losses[-1],
                                    scheduler.get_last_lr()[0])
            if step >= args.max_train_steps:
                break
            if ckpt is not None and step % args.checkpointing_steps == 0:
                _checkpoint(ckpt, params, optimizer, scheduler, {
                    "step": step, "epoch": epoch, "next_batch": k + 1, "batches": batches,
                    "losses": losses, "class_cursor": class_cursor[0]})
        state.pop("next_batch", None)
        epoch += 1
    seconds = time.perf_counter() - started
    parts.denoiser.eval()
    probe_after = step_fn.fixed_loss(probe)
    out = context.work_dir / "adapter"
    if config.merge_lora:
        _save_merged(parts, out)
    else:
        _save_adapter(parts, variant, out)
    record = {"variant": variant, "steps": step, "epochs": epoch, "images": len(dataset),
              "losses": losses, "first_loss": losses[0] if losses else None,
              "last_loss": losses[-1] if losses else None,
              "fixed_noise_loss_before": probe_before, "fixed_noise_loss_after": probe_after,
              "trainable_parameters": trainable, "seconds": round(seconds, 3),
              "device": device.type, "weight_dtype": str(dtype).replace("torch.", ""),
              "target_modules": config.targets(variant), "merged": config.merge_lora}
    (context.work_dir / "olivine_training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


#: the training state file in the step's state folder (a killed run resumes from it)
CHECKPOINT = "sd_lora_checkpoint.pt"


def _checkpoint(path: Path, params: list[Any], optimizer: Any, scheduler: Any,
                state: dict[str, Any]) -> None:
    """Save the LoRA weights, optimizer, schedule, RNG and loop position (atomically)."""
    import torch

    data = {**state, "lora": [p.detach().clone() for p in params],
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)


def _resume(path: Path | None, params: list[Any], optimizer: Any, scheduler: Any,
            context: PassContext) -> dict[str, Any]:
    """The loop state to start from: a checkpoint's (weights, optimizer, RNG restored) or zero."""
    import torch

    fresh: dict[str, Any] = {"step": 0, "epoch": 0, "losses": [], "class_cursor": 0}
    if path is None or not path.is_file():
        return fresh
    data = torch.load(path, weights_only=False)
    if len(data["lora"]) != len(params) or any(
            a.shape != b.shape for a, b in zip(data["lora"], params, strict=True)):
        context.logger.warning("checkpoint %s does not fit this LoRA; starting over", path)
        return fresh
    with torch.no_grad():
        for p, saved in zip(params, data["lora"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(data["optimizer"])
    scheduler.load_state_dict(data["scheduler"])
    torch.set_rng_state(data["rng"])
    context.logger.info("resuming from step %d (%s)", data["step"], path)
    return {k: data[k] for k in ("step", "epoch", "next_batch", "batches", "losses",
                                 "class_cursor")}


def _probe_batches(dataset: ImageFolder, config: SDLoRAConfig, class_images: list[str]
                   ) -> list[dict[str, Any]]:
    count = min(PROBE_IMAGES, len(dataset))
    return [collate(dataset, [i], config, [], [0]) for i in range(count)]


def _save_adapter(parts: Components, variant: str, out: Path) -> None:
    """The LoRA in diffusers' format (``pytorch_lora_weights.safetensors``), as Olive saves it."""
    import torch
    from peft import get_peft_model_state_dict

    out.mkdir(parents=True, exist_ok=True)
    layers = get_peft_model_state_dict(parts.denoiser.to(torch.float32))
    if variant == "flux":
        from diffusers import FluxPipeline

        FluxPipeline.save_lora_weights(save_directory=str(out), transformer_lora_layers=layers,
                                       safe_serialization=True)
    elif variant == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        StableDiffusionXLPipeline.save_lora_weights(save_directory=str(out),
                                                    unet_lora_layers=layers,
                                                    safe_serialization=True)
    else:
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline.save_lora_weights(save_directory=str(out), unet_lora_layers=layers,
                                                  safe_serialization=True)


def _save_merged(parts: Components, out: Path) -> None:
    """The denoiser with the LoRA folded in, as a diffusers model folder (Olive's merge_lora)."""
    import torch

    denoiser = parts.denoiser.to(torch.float32)
    denoiser.fuse_lora(lora_scale=1.0)
    denoiser.unload_lora()
    denoiser.save_pretrained(str(out), safe_serialization=True)


def steps_per_epoch(images: int, batch_size: int, accum: int) -> int:
    """Optimizer steps one pass over ``images`` gives (Olive's count)."""
    return math.ceil(math.ceil(images / batch_size) / accum)
