"""The image data side: Olive's bucket choice and SDXL crop coordinates, captions, batches of one
bucket size, and source images never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

#: (width, height) -> (bucket, crops_coords_top_left) per base_resolution, recorded from
#: olive-ai 0.13's aspect_ratio_bucketing helpers (_find_best_bucket, _calculate_crop_coords;
#: cover mode, center crop)
OLIVE = {
    512: [[640, 480, [576, 448], [0, 10]], [480, 640, [448, 576], [10, 0]],
          [1000, 300, [768, 320], [0, 149]], [512, 512, [512, 512], [0, 0]],
          [300, 900, [320, 768], [96, 0]], [1920, 1080, [672, 384], [0, 5]],
          [800, 600, [576, 448], [0, 10]], [333, 777, [320, 768], [0, 4]]],
    1024: [[640, 480, [1152, 896], [0, 21]], [480, 640, [896, 1152], [21, 0]],
           [1000, 300, [1536, 640], [0, 298]], [512, 512, [1024, 1024], [0, 0]],
           [300, 900, [640, 1536], [192, 0]], [1920, 1080, [1344, 768], [0, 10]],
           [800, 600, [1152, 896], [0, 21]], [333, 777, [640, 1536], [0, 9]]],
    768: [[640, 480, [896, 640], [16, 0]], [480, 640, [640, 896], [0, 16]],
          [1000, 300, [1216, 512], [0, 245]], [512, 512, [768, 768], [0, 0]],
          [300, 900, [512, 1152], [192, 0]], [1920, 1080, [1024, 576], [0, 0]],
          [800, 600, [896, 640], [16, 0]], [333, 777, [512, 1152], [21, 0]]],
}


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("sized")
    for i, (w, h, _, _) in enumerate(OLIVE[512]):
        Image.new("RGB", (w, h), (i * 20, 0, 0)).save(folder / f"s{i}.png")
    (folder / "s0.txt").write_text("first, second, third\n")
    return folder


@pytest.mark.parametrize("base", [512, 1024, 768])
def test_buckets_and_crops_are_olives(sized: Path, base: int) -> None:
    from olivine_diffusers.data import aspect_ratio_bucketing, image_folder_dataset

    data = aspect_ratio_bucketing(image_folder_dataset(str(sized)), base_resolution=base)
    got = {}
    for item in data.items:
        a = data.bucket_assignments[item["image_path"]]
        got[tuple(a["original_size"])] = [list(a["bucket"]), list(a["crops_coords_top_left"])]
    assert got == {(w, h): [b, c] for w, h, b, c in OLIVE[base]}


def test_captions_batches_and_untouched_sources(sized: Path) -> None:
    from olivine_diffusers.data import (
        image_folder_dataset,
        image_lora_preprocess,
        load_pixels,
    )
    from olivine_diffusers.train import bucket_batches

    before = {p.name: p.read_bytes() for p in sized.glob("*.png")}
    data = image_lora_preprocess(image_folder_dataset(str(sized), default_caption="x"))
    captions = {Path(i["image_path"]).name: i["caption"] for i in data.items}
    assert captions["s0.png"] == "first, second, third" and captions["s1.png"] == "x"
    for batch in bucket_batches(data, 3, seed=0, epoch=0):
        buckets = {tuple(data.bucket_assignments[data.items[i]["image_path"]]["bucket"])
                   for i in batch}
        assert len(buckets) == 1
    first = data.items[0]
    pixels = load_pixels(first["image_path"], data.bucket_assignments[first["image_path"]])
    assert tuple(pixels.shape) == (3, 448, 576)  # 640x480 -> its bucket, in memory
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    assert {p.name: p.read_bytes() for p in sized.glob("*.png")} == before


def test_resized_copies_go_to_output_dir(sized: Path, tmp_path: Path) -> None:
    from PIL import Image

    from olivine_diffusers.data import image_folder_dataset, image_lora_preprocess

    out = tmp_path / "resized"
    data = image_lora_preprocess(image_folder_dataset(str(sized)), output_dir=str(out),
                                 steps={"image_resizing": {"target_resolution": 64,
                                                           "resize_mode": "contain"}})
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(p.name for p in sized.glob("*.png"))  # Olive's: the source names
    assert {Path(i["image_path"]).parent for i in data.items} == {out}
    assert all(Image.open(p).size == (64, 64) for p in out.glob("*.png"))
    # contain mode pads with Olive's white; no crop, so SDXL's crop coordinates are (0, 0)
    assert all(a["crops_coords_top_left"] == (0, 0) for a in data.bucket_assignments.values())
    wide = Image.open(out / "s2.png").convert("RGB")  # 1000x300 in a 64x64 square
    assert wide.getpixel((32, 0)) == (255, 255, 255)
