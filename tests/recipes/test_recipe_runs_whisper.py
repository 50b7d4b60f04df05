"""Olive's Whisper recipes end to end: ModelBuilder makes encoder.onnx and decoder.onnx (a
composite model, as in Olive), and OnnxKQuantQuantization runs on each of them.

A tiny randomly initialized Whisper (2+2 layers, d_model 64, built locally with its own
tokenizer and feature extractor: no hub) replaces the recipe's model; nothing else of the
recipe changes. The published folder is one onnxruntime-genai model: ONNX Runtime runs its
encoder and decoder, onnxruntime-genai decodes greedily from audio features, and both agree
with the torch model within the stated tolerances.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recipes import recipe_runner as rr
from recipes import tiny_whisper as wh

WHISPER_CPU = "openai-whisper-tiny.en/cpu/whisper-tiny.en_cpu_int8.json"
#: The other two shapes of the 21 builder workflows: fp16 for CUDA and for WebGPU (built here for
#: that provider, run here on the CPU).
WHISPER_GPU = ("openai-whisper-tiny.en/cuda/whisper-tiny.en_cuda_int8.json",
               "openai-whisper-tiny.en/webgpu/whisper-tiny.en_webgpu_int8.json")
#: k-quant int8 (block 32) of the encoder and decoder vs the fp32 torch model, as
#: max|diff| / max|value| of each output; measured (seed 0) for the cpu recipe (fp32 build,
#: accuracy_level 4: int8 activations too): encoder 0.017-0.029, decoder logits 0.019-0.038
#: over 8 greedy steps in onnxruntime-genai; for the fp16 builds 0.011-0.040.
INT8_TOLERANCE = 0.08
NEW_TOKENS = 8


def _quantized_matmuls(model_file: Path) -> collections.Counter[tuple[int, int, int]]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    out: collections.Counter[tuple[int, int, int]] = collections.Counter()
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            out[(a["bits"], a["block_size"], a.get("accuracy_level", 0))] += 1
    assert not [n.name for n in graph.node if n.op_type == "MatMul"
                and any(i.name == n.input[1] for i in graph.initializer)], "float MatMul left"
    return out


def _relative(got: Any, want: Any) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def _check_genai(folder: Path, model: Path, features: Any, ids: list[int]) -> list[float]:
    """Greedy decoding in onnxruntime-genai vs torch, step by step: each step's logits agree
    within INT8_TOLERANCE and the chosen token is torch's choice on the same prefix (or torch's
    two best are closer than that tolerance). Returns the per-step errors."""
    tokens, logits = wh.genai_steps(folder, features, ids, NEW_TOKENS)
    assert len(tokens) == NEW_TOKENS
    want = wh.torch_step_logits(model, features, ids, tokens)
    errors = []
    eot = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    for step, (got, ref) in enumerate(zip(logits, want, strict=True)):
        errors.append(_relative(got, ref))
        ref = ref.copy()
        ref[eot] = -np.inf  # genai masks end of text below min_length
        top = np.sort(ref)[-2:]
        close = (top[1] - top[0]) / np.max(np.abs(want[step])) < INT8_TOLERANCE
        assert tokens[step] == int(np.argmax(ref)) or close, (step, tokens, errors)
    assert max(errors) < INT8_TOLERANCE, errors
    return errors


@pytest.mark.slow  # 63 s (22 s of CPU) on the shared 2-core machine: over the default run's share
def test_whisper_cpu_recipe_makes_one_genai_model_that_matches_torch(tmp_path: Path) -> None:
    """ModelBuilder (fp32) -> OnnxKQuantQuantization (8 bits, block 32, accuracy level 4) on
    both parts; the fp32 parts agree with torch to float rounding, the int8 ones within
    INT8_TOLERANCE, and onnxruntime-genai transcribes (greedy) as torch does."""
    model = wh.tiny_whisper(tmp_path / "tiny-whisper")
    prepared = rr.prepare(WHISPER_CPU, tmp_path, model)
    assert rr.changed_paths(prepared) == {"input_model.model_path"}
    assert rr.pass_sequence(prepared.workflow) == ("ModelBuilder", "OnnxKQuantQuantization")
    out = rr.run_ok(prepared, timeout=900)

    # one folder, as Olive publishes it: both parts, their data, one genai_config.json
    names = {p.name for p in out.iterdir()}
    assert {"encoder.onnx", "encoder.onnx.data", "decoder.onnx", "decoder.onnx.data",
            "genai_config.json", "audio_processor_config.json", "tokenizer.json"} <= names, names
    assert not any(p.is_dir() for p in out.iterdir())
    report = json.loads((out / "run.json").read_text())
    assert report["output_model"]["kind"] == "composite"
    assert [n for n, _ in report["output_model"]["components"]] == ["decoder.onnx", "encoder.onnx"]
    for part in ("encoder.onnx", "decoder.onnx"):
        ops = _quantized_matmuls(out / part)
        assert set(ops) == {(8, 32, 4)}, (part, ops)

    features, ids = wh.audio_features(model), wh.prompt_ids(model)
    want = wh.torch_reference(model, features, ids)
    built = Path(report["steps"][0]["output_model"]["path"])  # ModelBuilder's fp32 parts
    fp32 = wh.ort_outputs(built, features, ids)
    # fp32 ONNX vs torch: measured max relative difference 2e-6 (float rounding)
    assert max(_relative(fp32[k], want[k]) for k in want) < 1e-4
    got = wh.ort_outputs(out, features, ids)
    errors = {k: _relative(got[k], want[k]) for k in want}
    assert max(errors.values()) < INT8_TOLERANCE, errors
    assert np.array_equal(got["logits"].argmax(-1), want["logits"].argmax(-1))
    _check_genai(out, model, features, ids)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", WHISPER_GPU)
def test_whisper_fp16_recipe_for_a_gpu_runs_here_on_the_cpu(recipe: str, tmp_path: Path) -> None:
    """The CUDA and WebGPU recipes build fp16 parts for their provider (genai_config names it);
    ONNX Runtime and onnxruntime-genai run them here on the CPU within INT8_TOLERANCE."""
    model = wh.tiny_whisper(tmp_path / "tiny-whisper")
    prepared = rr.prepare(recipe, tmp_path, model)
    assert rr.changed_paths(prepared) == {"input_model.model_path"}
    out = rr.run_ok(prepared, timeout=900)
    config = json.loads((out / "genai_config.json").read_text())["model"]
    provider = "cuda" if "/cuda/" in recipe else "webgpu"
    for part in ("encoder", "decoder"):
        options = config[part]["session_options"]["provider_options"]
        assert [next(iter(o)) for o in options] == [provider], options
        assert set(_quantized_matmuls(out / f"{part}.onnx")) == {(8, 32, 0)}
    features, ids = wh.audio_features(model), wh.prompt_ids(model)
    want = wh.torch_reference(model, features, ids)
    got = wh.ort_outputs(out, features, ids)
    errors = {k: _relative(got[k], want[k]) for k in want}
    assert max(errors.values()) < INT8_TOLERANCE, errors
    _check_genai(out, model, features, ids)


def test_every_whisper_builder_recipe_is_one_of_these_shapes() -> None:
    """The 21 ModelBuilder workflows of the Whisper recipes (7 models x cpu, cuda, webgpu) are
    the three shapes run above: a new shape needs a run here."""
    root = rr.recipes_root()
    shapes: dict[tuple[Any, ...], list[str]] = {}
    for path in sorted(root.glob("openai-whisper-*/*/*.json")):
        workflow = json.loads(path.read_text(encoding="utf-8"))
        if "ModelBuilder" not in rr.pass_sequence(workflow):
            continue
        passes = list(workflow["passes"].values())
        provider = workflow["systems"]["local_system"]["accelerators"][0]["execution_providers"][0]
        shape = (rr.pass_sequence(workflow), passes[0]["precision"], provider,
                 tuple(sorted((k, v) for k, v in passes[1].items() if k != "type")))
        shapes.setdefault(shape, []).append(path.relative_to(root).as_posix())
    assert sum(map(len, shapes.values())) == 21, shapes
    runs = {WHISPER_CPU, *WHISPER_GPU}
    assert len(shapes) == 3 and all(runs & set(found) for found in shapes.values()), shapes
