"""CaptureSplitInfo, SplitModel and ComposeOnnxModels: a tiny decoder-shaped model split in two;
the parts chained in ONNX Runtime give the original outputs, and composing them gives back one
model computing the same (the same nodes run in the same order: equal to float rounding, 1e-6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_helpers import F, assert_same, make, save, session

import olivine
from olivine import Accelerator, ConfigError, HfModel, PassContext, PassError
from olivine.testing import make_workflow

RNG = np.random.default_rng(7)
V, H = 16, 8


def _decoder(tmp_path: Path, metadata: str | None = None) -> Path:
    """embed (Gather) -> 4 layers (MatMul + Tanh, a shared Constant) -> lm_head, named as the
    torch exporter names them."""
    nodes = [helper.make_node("Gather", ["embed_w", "input_ids"], ["h0"], name="/model/embed_tokens/Gather"),
             helper.make_node("Constant", [], ["half"], name="/model/Constant",
                              value=helper.make_tensor("v", F, [], [0.5]))]
    inits = {"embed_w": RNG.standard_normal((V, H)).astype(np.float32),
             "lm_w": RNG.standard_normal((H, V)).astype(np.float32)}
    for i in range(4):
        inits[f"w{i}"] = RNG.standard_normal((H, H)).astype(np.float32)
        nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"],
                                   name=f"/model/layers.{i}/mlp/MatMul"),
                  helper.make_node("Mul", [f"m{i}", "half"], [f"s{i}"], name=f"/model/layers.{i}/Mul"),
                  helper.make_node("Tanh", [f"s{i}"], [f"h{i + 1}"], name=f"/model/layers.{i}/act/Tanh")]
    nodes.append(helper.make_node("MatMul", ["h4", "lm_w"], ["logits"], name="/lm_head/MatMul"))
    model = make(nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                 [helper.make_tensor_value_info("logits", F, ["b", "s", V])], inits)
    if metadata:
        helper.set_model_props(model, {"split_assignments": metadata})
    return save(model, tmp_path / "in" / "model.onnx")


def _ids() -> dict[str, np.ndarray]:
    return {"input_ids": RNG.integers(0, V, (2, 5)).astype(np.int64)}


def test_split_in_two_chains_to_the_original_and_composes_back(tmp_path: Path) -> None:
    model = _decoder(tmp_path)
    wf = make_workflow(tmp_path, model, {"split": {
        "type": "SplitModel", "split_assignments": "model.layers.0=0;model.layers.1=0;"
                                                   "model.layers.2=1;model.layers.3=1"}})
    result = olivine.run(wf)
    assert result.ok
    parts = [h for _, h in result.output_model.components]
    assert [n for n, _ in result.output_model.components] == ["split_0", "split_1"]
    first, second = (session(h.model_file()) for h in parts)
    assert [i.name for i in first.get_inputs()] == ["input_ids"]
    assert [o.name for o in first.get_outputs()] == ["h2"]  # the tensor crossing the cut
    assert [i.name for i in second.get_inputs()] == ["h2"]
    names0 = {n.name for n in onnx.load(str(parts[0].model_file())).graph.node}
    names1 = {n.name for n in onnx.load(str(parts[1].model_file())).graph.node}
    assert "/model/embed_tokens/Gather" in names0 and "/lm_head/MatMul" in names1
    assert "/model/Constant" in names0 and "/model/Constant" in names1  # copied to each reader

    feeds = _ids()
    chained = second.run(None, dict(zip(["h2"], first.run(None, feeds), strict=True)))[0]
    original = session(model).run(None, feeds)[0]
    np.testing.assert_allclose(chained, original, atol=1e-6, rtol=1e-6)

    wf = make_workflow(tmp_path / "c", model, {
        "split": {"type": "SplitModel", "split_assignments": {"model.layers.2": 1, "model.layers.3": 1}},
        "compose": {"type": "ComposeOnnxModels"}})
    result = olivine.run(wf)
    composed = result.output_model.model_file()
    assert len(onnx.load(str(composed)).graph.node) == len(onnx.load(str(model)).graph.node)
    assert_same(model, composed, feeds=feeds, atol=1e-6, rtol=1e-6)


def test_split_reads_the_assignments_from_the_model_metadata(tmp_path: Path) -> None:
    model = _decoder(tmp_path, metadata="model.layers.1=0;model.layers.2=1;model.layers.3=2")
    result = olivine.run(make_workflow(tmp_path, model, {"s": {"type": "SplitModel"}}))
    assert len(result.output_model.components) == 3
    bare = _decoder(tmp_path / "bare")
    with pytest.raises(PassError, match="no split assignments: set split_assignments"):
        olivine.run(make_workflow(tmp_path / "b", bare, {"s": {"type": "SplitModel"}}))


def test_split_assignments_text_must_be_name_equals_number(tmp_path: Path) -> None:
    model = _decoder(tmp_path)
    wf = make_workflow(tmp_path, model, {"s": {"type": "SplitModel", "split_assignments": "a=0;b"}})
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    assert "split_assignments: item 1 ('b') is not NAME=SPLIT" in str(info.value)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer Qwen2 config (CaptureSplitInfo reads no weights)."""
    from transformers import Qwen2Config

    folder = tmp_path_factory.mktemp("qwen")
    Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(folder)
    return folder


def _capture(folder: Path, tmp_path: Path, **options: object) -> dict[str, int]:
    from olivine_onnx.pipeline_passes import CaptureSplitInfo, CaptureSplitInfoConfig

    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = CaptureSplitInfo().run(HfModel(path=str(folder)), CaptureSplitInfoConfig(**options),  # type: ignore[arg-type]
                                 PassContext(work_dir=work, step_name="c", accelerator=Accelerator()))
    return dict(out.attrs_dict()["split_assignments"])


def test_capture_split_info_num_splits(tiny_hf: Path, tmp_path: Path) -> None:
    # the same assignments Olive 0.13's CaptureSplitInfo computes for this config
    assert _capture(tiny_hf, tmp_path, num_splits=2) == {
        "model.layers.0": 0, "model.layers.1": 0, "model.layers.2": 1, "model.layers.3": 1}
    assert _capture(tiny_hf, tmp_path, num_splits=2, unique_embeds_lm_head_splits=True) == {
        "model.embed_tokens": 0, "model.layers.0": 1, "model.layers.1": 1, "model.layers.2": 2,
        "model.layers.3": 2, "lm_head": 3}


def test_capture_split_info_cost_model(tiny_hf: Path, tmp_path: Path) -> None:
    """Layers of 100 bytes each with 250 bytes of memory: two layers per split."""
    csv = tmp_path / "cost.csv"
    rows = ["module,num_params,num_bytes,num_flops"] + [
        f"model.layers.{i}.mlp.down_proj,10,100,20" for i in range(4)]
    csv.write_text("\n".join(rows) + "\n")
    assert _capture(tiny_hf, tmp_path, cost_model=str(csv), memory=250) == {
        "model.layers.0.mlp.down_proj": 0, "model.layers.1.mlp.down_proj": 0,
        "model.layers.2.mlp.down_proj": 1, "model.layers.3.mlp.down_proj": 1}


def test_capture_split_info_needs_num_splits_or_cost_model(tiny_hf: Path, tmp_path: Path) -> None:
    wf = {"input_model": {"type": "HfModel", "model_path": str(tiny_hf)},
          "passes": {"c": {"type": "CaptureSplitInfo"}}, "output_dir": str(tmp_path / "o")}
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    assert "passes.c.num_splits: set num_splits or cost_model" in str(info.value)
    wf["passes"]["c"] = {"type": "CaptureSplitInfo", "cost_model": "x.csv"}  # type: ignore[index]
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    assert "passes.c.memory: cost_model needs the accelerator's memory" in str(info.value)


@pytest.mark.slow
def test_capture_convert_split_chain_on_a_tiny_qwen2(tmp_path: Path) -> None:
    """CaptureSplitInfo -> OnnxConversion -> SplitModel: the exporter's node names carry the
    module names the assignments use; the two parts chained give the converted model's logits
    (1e-5; same nodes in the same order)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = tmp_path / "hf"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1)).eval().save_pretrained(hf)
    wf = {"input_model": {"type": "HfModel", "model_path": str(hf)},
          "passes": {"c": {"type": "CaptureSplitInfo", "num_splits": 2},
                     "conv": {"type": "OnnxConversion"}},
          "output_dir": str(tmp_path / "conv"), "cache_dir": str(tmp_path / "cache"),
          "log_severity_level": 3}
    converted = olivine.run(wf).output_model
    meta = {p.key: p.value for p in onnx.load(str(converted.model_file()), load_external_data=False)
            .metadata_props}
    assert converted.attrs_dict()["split_assignments"] or meta.get("split_assignments")
    wf["passes"]["s"] = {"type": "SplitModel"}  # type: ignore[index]
    wf["output_dir"] = str(tmp_path / "split")
    parts = [h for _, h in olivine.run(wf).output_model.components]
    assert len(parts) == 2
    feeds = {"input_ids": np.array([[3, 9, 27, 5]], np.int64),
             "attention_mask": np.ones((1, 4), np.int64)}
    values = dict(feeds)
    for part in parts:
        sess = session(part.model_file())
        values.update(zip([o.name for o in sess.get_outputs()],
                          sess.run(None, {i.name: values[i.name] for i in sess.get_inputs()}),
                          strict=True))
    want = session(converted.model_file()).run(["logits"], feeds)[0]
    np.testing.assert_allclose(values["logits"], want, atol=1e-5, rtol=1e-5)
