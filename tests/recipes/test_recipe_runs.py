"""Olive recipes run end to end with ``olivine run --config``, unchanged apart from model and data.

Each test copies one workflow of ``../shared/olive-recipes`` with its folder into ``tmp_path``,
swaps the hub model for a tiny local one of the same architecture (and a hub dataset for a
local file with the same columns), runs it in a fresh ``olivine`` process from the copy's
folder, and checks what a user would: the output loads in ONNX Runtime / onnxruntime-genai,
generates, and agrees with the torch model within a stated, measured tolerance.
More shapes are in ``test_recipe_runs_slow.py``.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recipes import recipe_runner as rr

from olivine_testutil import (
    sonnet_prompt_ids,
    tiny_bert_classifier,
    trained_llm,
    write_calibration_text,
    write_sentence_pairs,
)

QWEN3_INT4 = "Qwen-Qwen3-0.6B/cpu/Qwen-Qwen3-0.6B_cpu_int4.json"
BERT_QDQ = "intel-bert-base-uncased-mrpc/aitk/bert_qdq_qnn.json"


def _quant_ops(model_file: Path) -> collections.Counter[tuple[str, int]]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return collections.Counter(
        (n.op_type, next(a.i for a in n.attribute if a.name == "bits")) for n in graph.node
        if n.op_type in ("MatMulNBits", "GatherBlockQuantized"))


@pytest.mark.slow  # 45 s; the default run must stay under 15 minutes on the CI machine
def test_qwen3_cpu_int4_recipe_generates_and_matches_torch(tmp_path: Path, cache_root: Path) -> None:
    """SelectiveMixedPrecision(kld_gradient) -> gptq -> rtn -> ModelBuilder int4 -> GraphSurgeries
    (TieWordEmbeddings) on a tiny trained Qwen3; Olive's default calibration set (wikitext-2
    from the hub) is replaced by local Sonnets text."""
    rr.recipes_root()
    model = trained_llm(cache_root, "qwen3")
    prepared = rr.prepare(QWEN3_INT4, tmp_path, model,
                          calibration=write_calibration_text(tmp_path / "calibration.jsonl"))
    assert rr.pass_sequence(prepared.workflow) == (
        "SelectiveMixedPrecision", "gptq", "rtn", "ModelBuilder", "GraphSurgeries")
    changed = rr.changed_paths(prepared)
    assert {p for p in changed if not p.startswith("data_configs[0].")} == {
        "input_model.model_path", "passes.s.data_config", "passes.g.data_config"}

    out = rr.run_ok(prepared)
    folder = rr.find_one(out, "genai_config.json").parent
    # the recipe's precisions: 4-bit layers, 8-bit for the ones SelectiveMixedPrecision kept
    # high and for the tied embedding / LM head (rtn overrides), read through one weight
    ops = _quant_ops(folder / "model.onnx")
    assert ops[("MatMulNBits", 4)] > 0 and ops[("MatMulNBits", 8)] > 0, ops
    assert ops[("GatherBlockQuantized", 8)] == 1, ops

    errors = []
    for line in (0, 50, 100):
        ids = sonnet_prompt_ids(model, line)
        got, want = rr.genai_first_logits(folder, ids), rr.torch_first_logits(model, ids)
        errors.append(rr.relative_error(got, want))
        assert int(np.argmax(got)) == int(np.argmax(want))
    # max|diff| / max|logit| of the int4/int8 output vs the fp32 torch model: measured
    # 0.0055-0.0108 over 10 prompts (seed 0); 0.03 leaves room for other seeds and kernels
    assert max(errors) < 0.03, errors

    ids = sonnet_prompt_ids(model, 0)
    tokens = rr.genai_greedy(folder, ids, 6)
    assert tokens == rr.genai_greedy(folder, ids, 6), "greedy generation is deterministic"
    # measured: all 6 greedy tokens equal torch's greedy tokens (seed 0); the first 3 must
    assert tokens[:3] == _torch_greedy(model, ids, 3)


def _torch_greedy(model_dir: Path, ids: list[int], new_tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False)
    return [int(t) for t in out[0, len(ids):]]


def test_bert_qdq_recipe_runs_its_passes_and_names_the_missing_provider(tmp_path: Path) -> None:
    """OnnxConversion -> OnnxPeepholeOptimizer -> DynamicToFixedShape -> GraphSurgeries ->
    OnnxStaticQuantization (uint16 activations), glue/mrpc swapped for local sentence pairs.

    The recipe targets the QNN execution provider and evaluates on it: on a machine without
    it the five passes run, then evaluation stops with exit 2 naming the provider (no
    traceback). The quantized model the passes made (listed in the run report) loads in
    ONNX Runtime on the CPU and agrees with torch.
    """
    error, scale, agree = run_bert_recipe_without_its_provider(
        BERT_QDQ, tmp_path, "QNNExecutionProvider", ("OnnxConversion", "OnnxPeepholeOptimizer",
                                                     "DynamicToFixedShape", "GraphSurgeries",
                                                     "OnnxStaticQuantization"))
    # QDQ (uint8 weights, uint16 activations, MinMax on the 32 local pairs) vs fp32 torch:
    # max|diff| / max|logit| measured 0.037, the same label on 31 of 32 pairs (seed 0)
    assert error < 0.1 * scale, (error, scale)
    assert agree >= 0.85


def run_bert_recipe_without_its_provider(recipe: str, tmp_path: Path, provider: str,
                                         passes: tuple[str, ...]) -> tuple[float, float, float]:
    """Run an intel-bert-base-uncased-mrpc recipe on a tiny BERT classifier and local MRPC-like
    pairs where its evaluation provider is missing: check the run's failure is that, and return
    (max|ORT - torch|, max|torch logit|, label agreement) of the last pass's model."""
    rr.recipes_root()
    model = tiny_bert_classifier(tmp_path / "tiny-bert")
    data = write_sentence_pairs(tmp_path / "pairs.jsonl")
    prepared = rr.prepare(recipe, tmp_path, model, dataset=data)
    assert {re.sub(r"load_dataset_config\..*", "load_dataset_config", p)
            for p in rr.changed_paths(prepared)} - {"input_model.model_path"} == {
        f"data_configs[{i}].load_dataset_config" for i in range(len(prepared.workflow["data_configs"]))}

    result = rr.run(prepared)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{provider} is not available" in result.stderr
    assert "Traceback" not in result.stderr
    report = _report(result.stderr)
    assert [(s["pass"], s["status"]) for s in report["steps"]] == [(p, "ran") for p in passes]

    last = rr.find_one(Path(report["steps"][-1]["output_model"]["path"]), "*.onnx")
    session = rr.ort_session(last)
    if "DynamicToFixedShape" in passes:
        assert [tuple(i.shape) for i in session.get_inputs()] == [(1, 128)] * 3
    got, want = _bert_logits(session, model, data)
    got = got.astype(np.float64)
    return (float(np.max(np.abs(got - want))), float(np.max(np.abs(want))),
            float((got.argmax(-1) == want.argmax(-1)).mean()))


def test_io_config_sample_inputs_give_bert_valid_segment_ids() -> None:
    """OnnxConversion's samples from io_config (input_shapes, int64) keep token_type_ids at 0:
    BERT has 2 segments, so ids drawn like input_ids failed the export (IndexError)."""
    from olivine_transformers._export import io_config_inputs

    io = {"input_names": ["input_ids", "attention_mask", "token_type_ids"],
          "input_shapes": [[1, 128]] * 3, "input_types": ["int64"] * 3}
    sample = io_config_inputs(io, seed=0, high=30522)
    assert int(sample["token_type_ids"].max()) == 0
    assert int(sample["attention_mask"].min()) == 1
    assert int(sample["input_ids"].max()) > 1


def _report(stderr: str) -> dict[str, Any]:
    match = re.search(r"olivine: report: (\S+)", stderr)
    assert match, stderr[-2000:]
    return dict(json.loads(Path(match.group(1)).read_text()))


def _bert_logits(session: Any, model_dir: Path, data: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch_model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    got, want = [], []
    for row in map(json.loads, data.read_text().splitlines()):
        enc = tokenizer(row["sentence1"], row["sentence2"], padding="max_length", max_length=128,
                        truncation=True, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        got.append(session.run(None, feeds)[0][0])
        with torch.no_grad():
            want.append(torch_model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits[0]
                        .numpy())
    return np.asarray(got), np.asarray(want)


#: Every distinct pass sequence of the CPU LLM recipes (folders cpu/ and cpu_and_mobile*/) that
#: pass the dry run -> the recipe a test runs end to end for it, or why none does.
CPU_LLM_SHAPE_RUNS: dict[tuple[str, ...], str] = {
    ("SelectiveMixedPrecision", "gptq", "rtn", "ModelBuilder", "GraphSurgeries"): QWEN3_INT4,
    ("SelectiveMixedPrecision", "gptq", "rtn", "ModelBuilder"):
        "Qwen-Qwen3-14B/cpu/Qwen-Qwen3-14B_cpu_int4.json",
    ("ModelBuilder", "GraphSurgeries"): "tencent-HY-MT1.5-1.8B/cpu/tencent-HY-MT1.5-1.8B_cpu_fp32.json",
    ("gptq", "rtn", "ModelBuilder", "GraphSurgeries"):
        "tencent-HY-MT1.5-1.8B/cpu/tencent-HY-MT1.5-1.8B_cpu_int4.json",
    ("ModelBuilder",): "Qwen-Qwen3-VL-2B-Instruct/builtin/cpu_and_mobile/text.json",
}


def test_every_cpu_llm_recipe_shape_has_an_end_to_end_run() -> None:
    """A new pass sequence among the CPU LLM recipes needs a run here (or in the slow file)."""
    import sys

    from recipes.test_recipe_runs_slow import CPU_LLM_SHAPES, QWEN3_VL_TEXT

    root = rr.recipes_root()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        from recipe_dry_runs import load_exceptions, workflows
    finally:
        sys.path.pop(0)
    failing = load_exceptions()
    shapes: dict[tuple[str, ...], list[str]] = {}
    for path in workflows(root):
        rel = path.relative_to(root).as_posix()
        folder = path.parent.name
        workflow = json.loads(path.read_text(encoding="utf-8"))
        if rel in failing or not (folder == "cpu" or folder.startswith("cpu_and_mobile")):
            continue
        if "ModelBuilder" in rr.pass_sequence(workflow) and "whisper" not in rel:
            shapes.setdefault(rr.pass_sequence(workflow), []).append(rel)
    assert set(shapes) == set(CPU_LLM_SHAPE_RUNS), shapes
    for shape, recipe in CPU_LLM_SHAPE_RUNS.items():
        assert recipe in shapes[shape], (shape, recipe)
        assert recipe in (QWEN3_INT4, QWEN3_VL_TEXT) or recipe in CPU_LLM_SHAPES
