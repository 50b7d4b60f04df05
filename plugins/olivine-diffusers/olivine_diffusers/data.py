"""Olive's image data for diffusion LoRA: ``ImageDataContainer``, ``image_folder_dataset`` and
``image_lora_preprocess`` (with its ``image_filtering``, ``image_resizing`` and
``aspect_ratio_bucketing`` steps).

A dataset is a folder of images; a ``.txt`` file beside an image (same stem) is its caption.
Pre-processing assigns every image a training size (a bucket). Unlike Olive, the source images
are never rewritten: resized copies go to ``output_dir`` when one is given, else images are
resized as they are loaded for training.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from pathlib import Path
from typing import Any

from olivine import UsageError

log = logging.getLogger("olivine.diffusers")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tiff", ".tif")
#: Olive's order of the pre-processing steps; the caption steps need hub captioning models.
STEPS = ("image_filtering", "auto_caption", "auto_tagging", "image_resizing",
         "aspect_ratio_bucketing")
RESIZE_MODES = ("cover", "contain")
CROP_POSITIONS = ("center", "top", "bottom", "left", "right")
RESAMPLE_MODES = ("lanczos", "bilinear", "bicubic", "nearest")

#: Olive's fixed buckets for 512 (SD 1.5) and 1024 (SDXL, Flux), (width, height).
SD15_BUCKETS = [(512, 512), (576, 448), (448, 576), (608, 416), (416, 608), (672, 384),
                (384, 672), (768, 320), (320, 768)]
SDXL_BUCKETS = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768),
                (768, 1344), (1536, 640), (640, 1536)]


class ImageFolder:
    """The images of a folder with their captions, and (after pre-processing) their buckets.

    ``items`` are ``{"image_path", "caption"}`` dicts; ``bucket_assignments`` maps an image
    path to ``bucket`` (width, height), ``original_size``, ``crops_coords_top_left`` and the
    resize settings that turn the file into the bucket's size.
    """

    def __init__(self, data_dir: Path, items: list[dict[str, str]],
                 class_image_paths: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.items = items
        self.class_image_paths = class_image_paths or []
        self.bucket_assignments: dict[str, dict[str, Any]] = {}
        self.buckets: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, str]:
        return self.items[index]

    def __iter__(self) -> Any:
        return iter(self.items)


def find_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files of ``folder`` (and its subfolders when ``recursive``), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder_dataset(data_dir: str, recursive: bool = True, default_caption: str | None = None,
                         shuffle_tags: bool = False, tag_separator: str = ", ",
                         max_samples: int | None = None, instance_prompt: str | None = None,
                         class_data_dir: str | None = None,
                         class_prompt: str | None = None) -> ImageFolder:
    """Olive's ``image_folder_dataset``: images with ``.txt`` captions beside them."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise UsageError(f"data_dir: no such folder {data_dir!r}")
    paths = find_images(folder.resolve(), recursive)
    if not paths:
        raise UsageError(f"data_dir: {data_dir!r} holds no images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    if max_samples is not None:
        paths = paths[:max_samples]
    items = []
    for path in paths:
        caption = instance_prompt or _caption(path, default_caption or "", shuffle_tags,
                                              tag_separator)
        items.append({"image_path": str(path), "caption": caption})
    class_paths: list[str] = []
    if class_data_dir and Path(class_data_dir).expanduser().is_dir():
        class_paths = [str(p) for p in find_images(Path(class_data_dir).expanduser().resolve(),
                                                   recursive)]
    log.info("found %d images in %s", len(items), folder)
    return ImageFolder(folder.resolve(), items, class_paths)


def _caption(image: Path, default: str, shuffle_tags: bool, separator: str) -> str:
    text_file = image.with_suffix(".txt")
    if not text_file.is_file():
        return default
    caption = text_file.read_text(encoding="utf-8").strip()
    if shuffle_tags and separator in caption:
        tags = [t.strip() for t in caption.split(separator)]
        random.shuffle(tags)
        caption = separator.join(tags)
    return caption


def image_lora_preprocess(dataset: Any, base_resolution: int = 512,
                          steps: dict[str, dict[str, Any]] | None = None,
                          output_dir: str | None = None, device: str = "cuda",
                          overwrite: bool = False) -> ImageFolder:
    """Olive's chain: the ``steps`` given (default: ``aspect_ratio_bucketing``), in Olive's order.

    ``device`` is accepted for Olive's captioning steps, which olivine does not run.
    """
    if not isinstance(dataset, ImageFolder):
        raise UsageError("image_lora_preprocess: takes the images of image_folder_dataset, got "
                         f"{type(dataset).__name__}")
    steps = {"aspect_ratio_bucketing": {}} if steps is None else steps
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise UsageError(f"image_lora_preprocess.steps.{unknown[0]}: unknown step; the steps are "
                         f"{', '.join(STEPS)}")
    for name in ("auto_caption", "auto_tagging"):
        if name in steps:
            raise UsageError(f"image_lora_preprocess.steps.{name}: not supported by olivine (it "
                             "runs a hub captioning model); write a .txt caption beside each "
                             "image instead")
    if not any(s in steps for s in ("image_resizing", "aspect_ratio_bucketing")):
        raise UsageError("image_lora_preprocess.steps: give image_resizing or "
                         "aspect_ratio_bucketing, which set the training size of each image")
    for name in STEPS:
        if name not in steps:
            continue
        params = dict(steps[name] or {})
        if name == "image_filtering":
            dataset = _call(image_filtering, name, dataset, params)
            continue
        key = "base_resolution" if name == "aspect_ratio_bucketing" else "target_resolution"
        params.setdefault(key, base_resolution)
        params.setdefault("overwrite", overwrite)
        if output_dir is not None:
            params.setdefault("output_dir", output_dir)
        fn = aspect_ratio_bucketing if name == "aspect_ratio_bucketing" else image_resizing
        dataset = _call(fn, name, dataset, params)
    return dataset


def _call(fn: Any, name: str, dataset: ImageFolder, params: dict[str, Any]) -> ImageFolder:
    import inspect

    known = set(inspect.signature(fn).parameters) - {"dataset"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(f"image_lora_preprocess.steps.{name}.{unknown[0]}: unknown option; "
                         f"{name} takes {', '.join(sorted(known))}")
    result: ImageFolder = fn(dataset, **params)
    return result


def image_filtering(dataset: ImageFolder, min_size: int = 256, min_aspect_ratio: float = 0.5,
                    max_aspect_ratio: float = 2.0, remove_duplicates: bool = False,
                    blur_threshold: float | None = None) -> ImageFolder:
    """Drop images smaller than ``min_size``, of an aspect ratio outside the range, duplicates
    (average hash) and, with ``blur_threshold``, blurry ones (Laplacian variance at 512x512)."""
    from PIL import Image

    kept, seen, dropped = [], set(), 0
    for item in dataset.items:
        try:
            with Image.open(item["image_path"]) as img:
                w, h = img.size
                gray = img.convert("L")
                if not (w >= min_size and h >= min_size
                        and min_aspect_ratio <= w / h <= max_aspect_ratio):
                    dropped += 1
                    continue
                if remove_duplicates:
                    digest = _average_hash(gray)
                    if digest in seen:
                        dropped += 1
                        continue
                    seen.add(digest)
                if blur_threshold is not None and _blur_score(gray) < blur_threshold:
                    dropped += 1
                    continue
        except OSError:
            dropped += 1
            continue
        kept.append(item)
    log.info("image_filtering: %d of %d images kept", len(kept), len(dataset.items))
    if not kept:
        raise UsageError(f"image_filtering: all {dropped} images were filtered out (min_size "
                         f"{min_size}, aspect ratio {min_aspect_ratio}..{max_aspect_ratio})")
    dataset.items = kept
    return dataset


def _average_hash(gray: Any, size: int = 16) -> str:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(gray.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    return "".join("1" if b else "0" for b in (pixels > pixels.mean()).flatten())


def _blur_score(gray: Any) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(gray.resize((512, 512), Image.Resampling.BILINEAR), dtype=np.float64)
    lap = (-4 * a[1:-1, 1:-1] + a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
    return float(lap.var())


def generate_buckets(base_resolution: int, max_aspect_ratio: float = 2.5) -> list[tuple[int, int]]:
    """Buckets of about ``base_resolution``² pixels for sizes other than 512 and 1024 (Olive's
    rule: sides 256..2*base in steps of 64; below 512 the sides start at base/2 in steps of 8)."""
    divisor = 64 if base_resolution >= 512 else 8
    min_dim = 256 if base_resolution >= 512 else max(divisor, base_resolution // 2)
    target = base_resolution * base_resolution
    found = set()
    for width in range(min_dim, 2 * base_resolution + 1, divisor):
        height = round(int(target / width) / divisor) * divisor
        if min_dim <= height <= 2 * base_resolution and \
                1 / max_aspect_ratio <= width / height <= max_aspect_ratio:
            found.add((width, height))
    if not found:
        raise UsageError(f"base_resolution {base_resolution}: no bucket sizes fit; use 64 or more")
    return sorted(found, key=lambda b: (abs(b[0] / b[1] - 1), -b[0] * b[1]))


def _best_bucket(w: int, h: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """Olive's choice: the closest aspect ratio, with a penalty for upscaling."""
    def score(b: tuple[int, int]) -> float:
        upscale = max(0.0, max(b[0] / w, b[1] / h) - 1) * 0.5
        return abs(math.log(w / h) - math.log(b[0] / b[1])) + upscale

    return min(buckets, key=score)


def cover_size(w: int, h: int, tw: int, th: int) -> tuple[int, int]:
    """The size that covers ``tw`` x ``th`` keeping the aspect ratio (before cropping)."""
    if w / h > tw / th:
        return int(th * w / h), th
    return tw, int(tw * h / w)


def crop_offsets(size: tuple[int, int], target: tuple[int, int], position: str) -> tuple[int, int]:
    """(left, top) of the ``target`` crop of an image of ``size`` at ``position``."""
    (w, h), (tw, th) = size, target
    left, top = (w - tw) // 2, (h - th) // 2
    if position == "top":
        top = 0
    elif position == "bottom":
        top = h - th
    elif position == "left":
        left = 0
    elif position == "right":
        left = w - tw
    return left, top


def resize_to(img: Any, bucket: tuple[int, int], how: dict[str, Any]) -> Any:
    """``img`` brought to ``bucket`` by cover-and-crop or contain-and-pad (Olive's resize)."""
    from PIL import Image

    resample = getattr(Image.Resampling, str(how.get("resample_mode", "lanczos")).upper())
    tw, th = bucket
    if how.get("resize_mode", "cover") == "cover":
        size = cover_size(img.size[0], img.size[1], tw, th)
        big = img.resize(size, resample)
        left, top = crop_offsets(size, bucket, how.get("crop_position", "center"))
        return big.crop((left, top, left + tw, top + th))
    scale = min(tw / img.size[0], th / img.size[1])
    size = (max(1, int(img.size[0] * scale)), max(1, int(img.size[1] * scale)))
    canvas = Image.new("RGB", bucket, tuple(how.get("fill_color", (255, 255, 255))))
    canvas.paste(img.resize(size, resample), ((tw - size[0]) // 2, (th - size[1]) // 2))
    return canvas


def _check_choices(resize_mode: str, resample_mode: str, crop_position: str, step: str) -> None:
    for key, value, choices in (("resize_mode", resize_mode, RESIZE_MODES),
                                ("resample_mode", resample_mode, RESAMPLE_MODES),
                                ("crop_position", crop_position, CROP_POSITIONS)):
        if value not in choices:
            raise UsageError(f"image_lora_preprocess.steps.{step}.{key}: {value!r} is not one of "
                             f"{', '.join(choices)}")


def _assign(dataset: ImageFolder, choose: Any, how: dict[str, Any], output_dir: str | None,
            overwrite: bool, resize_images: bool = True, by_name: bool = False) -> None:
    """Give every image (and class image) its bucket; write resized copies to ``output_dir``
    (named by index as Olive's bucketing does, or ``by_name`` keeping the source's file name as
    Olive's image_resizing does; a name met twice gets its index in front)."""
    from PIL import Image

    out = Path(output_dir).expanduser() if output_dir and resize_images else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    assignments: dict[str, dict[str, Any]] = {}

    def one(path: str, name: str) -> str:
        with Image.open(path) as img:
            size = img.size
            bucket = choose(*size)
            final = path
            if out is not None:
                target = out / name
                if overwrite or not target.is_file():
                    resize_to(img.convert("RGB"), bucket, how).save(target)
                final = str(target)
        crop = (0, 0)
        if how["resize_mode"] == "cover":
            covered = cover_size(size[0], size[1], bucket[0], bucket[1])
            left, top = crop_offsets(covered, bucket, how["crop_position"])
            crop = (top, left)
        assignments[final] = {"bucket": bucket, "original_size": size,
                              "crops_coords_top_left": crop, "resize": how}
        return final

    used: set[str] = set()
    for i, item in enumerate(dataset.items):
        source = Path(item["image_path"])
        name = source.name if by_name else f"{i:06d}{source.suffix}"
        if name in used:
            name = f"{i:06d}_{source.name}"
        used.add(name)
        try:
            item["image_path"] = one(item["image_path"], name)
        except OSError as exc:
            raise UsageError(f"image {item['image_path']!r} cannot be read: {exc}") from None
    classes = []
    for i, path in enumerate(dataset.class_image_paths):
        if out is not None:
            (out / "class_images").mkdir(exist_ok=True)
        classes.append(one(path, f"class_images/class_{i:06d}{Path(path).suffix}"))
    dataset.class_image_paths = classes
    dataset.bucket_assignments = assignments
    dataset.buckets = sorted({a["bucket"] for a in assignments.values()})


def aspect_ratio_bucketing(dataset: ImageFolder, base_resolution: int = 512,
                           custom_buckets: list[list[int]] | None = None,
                           resize_images: bool = True, resize_mode: str = "cover",
                           resample_mode: str = "lanczos", crop_position: str = "center",
                           fill_color: list[int] | tuple[int, int, int] = (255, 255, 255),
                           output_dir: str | None = None, overwrite: bool = False) -> ImageFolder:
    """Olive's bucketing: each image goes to the bucket of the closest aspect ratio."""
    _check_choices(resize_mode, resample_mode, crop_position, "aspect_ratio_bucketing")
    if custom_buckets:
        buckets = [(int(b[0]), int(b[1])) for b in custom_buckets]
    elif base_resolution == 512:
        buckets = SD15_BUCKETS
    elif base_resolution == 1024:
        buckets = SDXL_BUCKETS
    else:
        buckets = generate_buckets(base_resolution)
    how = {"resize_mode": resize_mode, "resample_mode": resample_mode,
           "crop_position": crop_position, "fill_color": list(fill_color)}
    _assign(dataset, lambda w, h: _best_bucket(w, h, buckets), how, output_dir, overwrite,
            resize_images)
    return dataset


def image_resizing(dataset: ImageFolder, target_resolution: int = 512, resize_mode: str = "cover",
                   resample_mode: str = "lanczos",
                   fill_color: list[int] | tuple[int, int, int] = (255, 255, 255),
                   crop_position: str = "center", output_dir: str | None = None,
                   overwrite: bool = False) -> ImageFolder:
    """Olive's fixed size: every image becomes ``target_resolution`` square."""
    _check_choices(resize_mode, resample_mode, crop_position, "image_resizing")
    how = {"resize_mode": resize_mode, "resample_mode": resample_mode,
           "crop_position": crop_position, "fill_color": list(fill_color)}
    size = (target_resolution, target_resolution)
    _assign(dataset, lambda w, h: size, how, output_dir, overwrite, by_name=True)
    return dataset


def load_pixels(path: str, assignment: dict[str, Any]) -> Any:
    """The image at ``path`` at its bucket's size as a (3, H, W) float tensor in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    bucket = tuple(assignment["bucket"])
    if rgb.size != bucket:
        rgb = resize_to(rgb, (int(bucket[0]), int(bucket[1])), assignment["resize"])
    array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def prompt_digest(prompt: str) -> str:
    """A short name for a class prompt's generated images (Olive keys them the same way)."""
    return hashlib.md5(prompt.encode(), usedforsecurity=False).hexdigest()[:8]


def register_all(register: Any) -> None:
    """Register the container and its components (Olive's names)."""
    from olivine.data import DataContainerSpec

    register("load_dataset", image_folder_dataset)
    register("pre_process_data", image_lora_preprocess)
    register("data_container", DataContainerSpec(
        name="ImageDataContainer",
        components={"load_dataset": "image_folder_dataset",
                    "pre_process_data": "image_lora_preprocess"}))
