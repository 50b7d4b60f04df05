"""A pass that does not take composite models runs once per component of one (Olive's
``Pass.run``), and the outputs form a composite again.

SplitModel makes a two-part composite of a tiny MLP; OnnxBlockWiseRtnQuantization then
quantizes each part (in a subfolder per part, as Olive names them ``split_0``, ``split_1``);
the quantized parts chained in ONNX Runtime agree with the original model. Components named
like ONNX files (ModelBuilder's ``encoder.onnx`` / ``decoder.onnx``, see
tests/recipes/test_recipe_runs_whisper.py) share one folder instead.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import olivine
from olivine.accelerator import Accelerator
from olivine.composite import run_per_component
from olivine.errors import UsageError
from olivine.models import CompositeModel, HfModel, ModelHandle, OnnxModel
from olivine.passes import PassContext
from olivine.testing import make_workflow

H = 64


def _mlp(folder: Path) -> Path:
    """x -> MatMul -> Tanh -> MatMul -> y, the layers named as the torch exporter names them."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((H, H)).astype(np.float32) / 8, f"w{i}")
             for i in range(2)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="/model/layers.0/MatMul"),
             helper.make_node("Tanh", ["h"], ["t"], name="/model/layers.0/Tanh"),
             helper.make_node("MatMul", ["t", "w1"], ["y"], name="/model/layers.1/MatMul")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", H])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx"


def _run(model_file: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def test_an_onnx_pass_after_split_model_quantizes_each_part(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "in")
    wf = make_workflow(tmp_path, model, {
        "split": {"type": "SplitModel", "split_assignments": "model.layers.0=0;model.layers.1=1"},
        "rtn": {"type": "OnnxBlockWiseRtnQuantization", "bits": 8, "block_size": 32}})
    result = olivine.run(wf)  # the chain check lets the composite into the ONNX pass
    out = result.output_model
    assert isinstance(out, CompositeModel)
    assert [name for name, _ in out.components] == ["split_0", "split_1"]
    parts = [h for _, h in out.components]
    assert all(isinstance(h, OnnxModel) for h in parts)
    for name, handle in out.components:  # each part in its own subfolder of the output
        assert Path(handle.path) == Path(out.path) / name
        ops = [n.op_type for n in onnx.load(str(handle.model_file())).graph.node]
        assert ops.count("MatMulNBits") == 1 and "MatMul" not in ops, (name, ops)
    x = np.random.default_rng(0).standard_normal((4, H)).astype(np.float32)
    (hidden,) = _run(parts[0].model_file(), {"x": x})
    assert _inputs(parts[1]) == ["t"]  # the tensor crossing the cut
    (got,) = _run(parts[1].model_file(), {"t": hidden})
    (want,) = _run(model, {"x": x})
    # 8-bit round to nearest, block 32, of two 64x64 layers: measured max |diff| 0.014
    # against max |y| 1.70, 0.8% (seeds 3 and 0)
    assert np.max(np.abs(got - want)) < 0.02 * np.max(np.abs(want))
    report = result.report
    assert report["steps"][1]["output_model"]["kind"] == "composite"


def _inputs(handle: ModelHandle) -> list[str]:
    assert isinstance(handle, OnnxModel)
    return [i.name for i in onnx.load(str(handle.model_file())).graph.input]


def _context(work: Path) -> PassContext:
    work.mkdir(parents=True)
    return PassContext(work_dir=work, step_name="s", accelerator=Accelerator(),
                       logger=logging.getLogger("test"))


def _shared_composite(tmp_path: Path) -> CompositeModel:
    """encoder.onnx and decoder.onnx (with external data) and a side file in one folder."""
    folder = tmp_path / "built"
    folder.mkdir()
    for name in ("encoder", "decoder"):
        proto = onnx.load(str(_mlp(tmp_path / f"src-{name}")))
        onnx.save(proto, str(folder / f"{name}.onnx"), save_as_external_data=True,
                  location=f"{name}.onnx.data", size_threshold=0)
    (folder / "genai_config.json").write_text("{}")
    return CompositeModel(path=str(folder), components=tuple(
        (f"{n}.onnx", OnnxModel(path=str(folder), onnx_file_name=f"{n}.onnx"))
        for n in ("decoder", "encoder")))


def test_parts_named_like_onnx_files_share_one_folder_with_their_side_files(tmp_path: Path) -> None:
    composite = _shared_composite(tmp_path)

    def rewrite(model: ModelHandle, context: PassContext) -> ModelHandle:
        from olivine.onnxsave import save_onnx

        assert isinstance(model, OnnxModel)
        proto = onnx.load(str(model.model_file()))
        return save_onnx(proto, context.work_dir, file_name=model.model_file().name, source=model,
                         tag=model.model_file().stem)

    work = tmp_path / "work"
    out = run_per_component(rewrite, "P", ("onnx",), composite, _context(work))
    # the external data went into the files (save_onnx's default), the old data stays behind
    assert sorted(p.name for p in work.iterdir()) == ["decoder.onnx", "encoder.onnx",
                                                      "genai_config.json"]
    assert [(n, h.attrs_dict()["tag"]) for n, h in out.components] == [
        ("decoder.onnx", "decoder"), ("encoder.onnx", "encoder")]
    assert out.holds_components() and sorted(f.name for f in out.files()) == [
        "decoder.onnx", "encoder.onnx", "genai_config.json"]


def test_parts_whose_outputs_take_one_name_are_an_error(tmp_path: Path) -> None:
    composite = _shared_composite(tmp_path)

    def to_model_onnx(model: ModelHandle, context: PassContext) -> ModelHandle:
        from olivine.onnxsave import save_onnx

        assert isinstance(model, OnnxModel)
        return save_onnx(onnx.load(str(model.model_file())), context.work_dir, source=model)

    with pytest.raises(UsageError, match=re.escape("components 'decoder.onnx' and 'encoder.onnx' "
                                                   "both wrote model.onnx")):
        run_per_component(to_model_onnx, "P", ("onnx",), composite, _context(tmp_path / "w"))


def test_a_part_of_a_kind_the_pass_does_not_take_is_an_error(tmp_path: Path) -> None:
    composite = CompositeModel(path=str(tmp_path), components=(
        ("text", HfModel(path=str(tmp_path / "hf"))),))
    with pytest.raises(UsageError, match="P takes onnx models, but component 'text' of the "
                                         "composite input is a hf model"):
        run_per_component(lambda m, c: m, "P", ("onnx",), composite, _context(tmp_path / "w"))


def test_a_failing_part_is_named_in_the_error(tmp_path: Path) -> None:
    composite = _shared_composite(tmp_path)

    def fail_on_encoder(model: ModelHandle, context: PassContext) -> ModelHandle:
        assert isinstance(model, OnnxModel)
        if model.onnx_file_name == "encoder.onnx":
            raise UsageError("no MatMul to quantize")
        return model

    with pytest.raises(UsageError) as info:
        run_per_component(fail_on_encoder, "P", ("onnx",), composite, _context(tmp_path / "w"))
    assert str(info.value) == "component 'encoder.onnx': no MatMul to quantize"
    assert info.value.exit_code == 2
