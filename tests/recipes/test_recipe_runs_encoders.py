"""An encoder recipe whose user script runs unchanged: openai-clip-vit-base-patch16's QNN
workflow (aitk/openai_clip_qnn.json) on a tiny CLIP.

The recipe's ``user_script.py`` (``from olive.data.registry import Registry``, a
``clip_dataset`` that loads its processor and the flickr30k captions itself, a post-process)
is copied unchanged. The model swap is the recipe's ``model_path`` and the ``model_name`` its
dataset component loads the processor from; the data swap is the ``dataset_name`` it calls
``datasets.load_dataset`` with (a local folder holding a ``test`` split of images and caption
lists, flickr30k's columns). OnnxConversion (io_config's fixed shapes), GraphSurgeries
(MatMulAddToGemm, ReplaceAttentionMaskValue) and OnnxStaticQuantization (uint16 activations,
uint8 weights, calibrated through the user script) run; evaluation then needs the QNN
execution provider, which this machine lacks: exit 2 naming it, as for the BERT QNN recipe.
The quantized model loads in ONNX Runtime and agrees with torch.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recipes import recipe_runner as rr

from olivine_testutil import sentence_words

CLIP_QNN = "openai-clip-vit-base-patch16/aitk/openai_clip_qnn.json"


def tiny_clip(folder: Path) -> Path:
    """A 2+2-layer CLIP (width 32, 224x224 images in 32x32 patches, projection 512 as the
    recipe's io_config declares) with a byte-level BPE tokenizer and image processor, saved
    with ``CLIPProcessor.save_pretrained``."""
    import torch
    from recipes.tiny_whisper import byte_alphabet
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    alphabet = byte_alphabet()
    vocab = {c: i for i, c in enumerate([*alphabet, *(c + "</w>" for c in alphabet)])}
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tmp = Path(tempfile.mkdtemp(prefix="clip-vocab-"))
    (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges)
                                    + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)
    shutil.rmtree(tmp, ignore_errors=True)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "eos_token_id": eos, "pad_token_id": eos,
                     "bos_token_id": tokenizer.convert_tokens_to_ids("<|startoftext|>")},
        vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=512)
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def write_captioned_images(folder: Path, count: int = 120) -> Path:
    """A local dataset folder with flickr30k's columns (``image``, ``caption``: five strings)
    as one ``test`` split (``data/test-00000-of-00001.parquet``, images as PNG)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    words = sentence_words()
    images, captions = [], []
    for i in range(count):
        tint = rng.integers(0, 255, 3)
        pixels = (tint + rng.integers(-40, 40, (48, 64, 3))).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
        captions.append([words[(5 * i + k) % len(words)] for k in range(5)])
    features = datasets.Features({"image": datasets.Image(),
                                  "caption": datasets.Sequence(datasets.Value("string"))})
    data = datasets.Dataset.from_dict({"image": images, "caption": captions}, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    data.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def _feeds(model: Path, data: Path, item: int) -> dict[str, Any]:
    """One item as the recipe's CLIPDataset makes it: 10 captions, one 224x224 image."""
    import datasets
    from transformers import CLIPProcessor

    processor = CLIPProcessor.from_pretrained(str(model))
    rows = datasets.load_dataset(str(data), split=f"test[{item}:{item + 10}]")
    text = processor(text=[" ".join(c) for c in rows["caption"]], return_tensors="np",
                     padding="max_length", truncation=True)
    image = processor(images=rows[0]["image"].resize((224, 224)), return_tensors="np")
    return {"input_ids": text["input_ids"].astype(np.int64),
            "pixel_values": image["pixel_values"].astype(np.float32),
            "attention_mask": text["attention_mask"].astype(np.int64)}


def run_clip_recipe_without_its_provider(recipe: str, tmp_path: Path, provider: str,
                                         passes: tuple[str, ...]) -> tuple[dict[str, float], Path]:
    """Run a CLIP recipe (tiny CLIP, local captioned images) where its provider is missing:
    check that its passes ran and the run then stopped naming the provider (exit 2, no
    traceback); return the last model's errors against torch (see :func:`clip_errors`)."""
    rr.recipes_root()
    model = tiny_clip(tmp_path / "tiny-clip")
    data = write_captioned_images(tmp_path / "flickr")
    prepared = rr.prepare(recipe, tmp_path, model,
                          data_params={"model_name": str(model), "dataset_name": str(data)})
    assert {re.sub(r"^data_configs\[\d\]", "data_configs[i]", p)
            for p in rr.changed_paths(prepared)} == {
        "input_model.model_path", "data_configs[i].load_dataset_config.model_name",
        "data_configs[i].load_dataset_config.dataset_name"}
    source = rr.RECIPES / Path(recipe).parent / "user_script.py"
    assert (prepared.folder / "user_script.py").read_bytes() == source.read_bytes()

    result = rr.run(prepared, timeout=900)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{provider} is not available" in result.stderr
    assert "Traceback" not in result.stderr
    match = re.search(r"olivine: report: (\S+)", result.stderr)
    assert match, result.stderr[-2000:]
    report = json.loads(Path(match.group(1)).read_text())
    assert [(s["pass"], s["status"]) for s in report["steps"]] == [(p, "ran") for p in passes]
    last = rr.find_one(Path(report["steps"][-1]["output_model"]["path"]), "*.onnx")
    return clip_errors(last, model, data), last


def clip_errors(model_file: Path, model: Path, data: Path) -> dict[str, float]:
    """The ONNX model vs the torch CLIP on items 100-109 (10 captions and an image each, as
    the recipe's dataset makes them; the calibration sees the first 100 at most):
    max|diff| / max|value| of text and image embeddings, and the logits' max|diff| over
    logit_scale (a random CLIP's cosines are all near 0, so its logits are small)."""
    import onnxruntime as ort
    import torch
    from transformers import CLIPModel

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    torch_model = CLIPModel.from_pretrained(str(model)).eval()
    scale = float(torch_model.logit_scale.detach().exp())
    errors: dict[str, float] = {}
    for item in range(100, 110):
        feeds = _feeds(model, data, item)
        got = dict(zip(names, session.run(None, feeds), strict=True))
        with torch.no_grad():
            want = torch_model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name in ("text_embeds", "image_embeds"):
            ref = getattr(want, name).numpy()
            errors[name] = max(errors.get(name, 0.0),
                               float(np.max(np.abs(got[name] - ref)) / np.max(np.abs(ref))))
        ref = want.logits_per_image.numpy()
        errors["logits"] = max(errors.get("logits", 0.0),
                               float(np.max(np.abs(got["logits_per_image"] - ref)) / scale))
    return errors


def test_clip_qnn_recipe_runs_its_user_script_and_the_quantized_model_matches_torch(
        tmp_path: Path) -> None:
    """The user script's clip_dataset feeds the calibration; the QDQ model agrees with torch."""
    import onnx

    errors, last = run_clip_recipe_without_its_provider(
        CLIP_QNN, tmp_path, "QNNExecutionProvider",
        ("OnnxConversion", "GraphSurgeries", "OnnxStaticQuantization"))
    ops = {n.op_type for n in onnx.load(str(last), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # uint16 activations, uint8 weights; measured (seed 0): embeddings 0.054 (image) and 0.074
    # (text), logits 0.021 of logit_scale (14.3); which caption ranks first is a near tie for
    # a random CLIP (7 of 10 agree): not checked
    assert errors["text_embeds"] < 0.15 and errors["image_embeds"] < 0.15, errors
    assert errors["logits"] < 0.05, errors


#: CLIP recipes whose user script serves only the evaluation, on a provider missing here:
#: recipe -> (provider, passes). Their fp32 output agrees with torch to float rounding.
CLIP_ELSEWHERE: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai-clip-vit-base-patch16/aitk/openai_clip_qnn_gpu.json": (
        "QNNExecutionProvider", ("OnnxConversion", "GraphSurgeries")),
    "openai-clip-vit-base-patch16/QNN/config_gpu_fp32.json": (
        "QNNExecutionProvider", ("OnnxConversion", "GraphSurgeries")),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(CLIP_ELSEWHERE))
def test_clip_fp32_recipe_for_another_provider_runs_its_passes(recipe: str, tmp_path: Path) -> None:
    """Conversion and the surgeries (ReplaceAttentionMaskValue: -50 instead of the dtype's
    minimum, the same softmax here) run; evaluation stops on the missing provider."""
    provider, passes = CLIP_ELSEWHERE[recipe]
    errors, _ = run_clip_recipe_without_its_provider(recipe, tmp_path, provider, passes)
    assert max(errors.values()) < 1e-3, errors  # measured 1e-5 (fp32 rounding)
