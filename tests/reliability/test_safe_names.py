"""Names from a config stay inside: a name that becomes a path is one path component.

Each test writes the config a user could write, runs ``olivine run`` and sees exit 2 with
the bad key named, and nothing written outside (or at all).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import make_workflow
from olivine_testutil import HELLO_MODEL


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


BAD_NAMES = [
    pytest.param("../../x", "without '/'", id="dot-dot-slash"),
    pytest.param("a/b", "without '/'", id="slash"),
    pytest.param("a\\b", "a single name", id="backslash"),
    pytest.param("..", "must not be '..'", id="dot-dot"),
    pytest.param("a\x00b", "NUL", id="nul"),
    pytest.param("x" * 256, "longer than 255 bytes", id="too-long"),
]


@pytest.mark.parametrize(("name", "why"), BAD_NAMES)
def test_bad_pass_name_is_a_config_error(name: str, why: str, tmp_path: Path, onnx_model: Path,
                                         cli: Callable[..., tuple[int, str, str]],
                                         runs_file: Path) -> None:
    """Today a pass named ``../../x`` writes its log outside the cache."""
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    wf = make_workflow(work, onnx_model, {name: {"type": "Scale"}})
    config = work / "workflow.json"
    config.write_text(json.dumps(wf))
    before = _files_under(tmp_path)
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert f"passes.{name}" in err and why in err
    assert _files_under(tmp_path) == before  # no cache, no output, no log anywhere
    assert not runs_file.exists()


def _onnx_with_outside_data(tmp_path: Path) -> Path:
    """A model folder whose model.onnx keeps its weights in ``../secret.data``."""
    import onnx

    folder = tmp_path / "project" / "model"
    shutil.copytree(HELLO_MODEL, folder)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    onnx.save_model(proto, str(folder / "model.onnx"))
    (folder / "model.onnx.data").rename(folder.parent / "secret.data")
    return folder


@pytest.mark.parametrize("passes", [{}, {"scale": {"type": "Scale"}}], ids=["no-passes", "a-pass"])
def test_onnx_external_data_outside_its_folder_is_refused(
        passes: dict[str, Any], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    """Today ``"passes": {}`` copies the outside file into the output."""
    folder = _onnx_with_outside_data(tmp_path)
    config = tmp_path / "workflow.json"
    config.write_text(json.dumps(make_workflow(tmp_path, folder, passes)))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert "input_model.model_path" in err and "'../secret.data'" in err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()
    # given as the .onnx file itself, not the folder: refused too
    config.write_text(json.dumps(make_workflow(tmp_path, folder / "model.onnx", passes)))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "'../secret.data'" in err
    assert not (tmp_path / "out").exists()


def test_onnx_file_name_outside_the_model_folder_is_refused(
        tmp_path: Path, onnx_model: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    """``onnx_file_name`` names a file in ``model_path``; ``../x.onnx`` would publish a handle
    pointing outside the output."""
    shutil.copy(onnx_model / "model.onnx", tmp_path / "x.onnx")
    wf = make_workflow(tmp_path, onnx_model, {})
    wf["input_model"]["onnx_file_name"] = "../x.onnx"
    config = tmp_path / "workflow.json"
    config.write_text(json.dumps(wf))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "input_model.onnx_file_name" in err and "'../x.onnx'" in err, err
    assert not (tmp_path / "out").exists()


def test_external_data_of_a_subgraph_outside_is_refused(
        tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    """The location may hide in an If branch's initializer: refused as well."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    weight = numpy_helper.from_array(np.ones(3, np.float32), "w")
    set_external_data(weight, "../../etc/passwd")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, [3])
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["o"])], "b", [], [out],
                               [weight])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["o"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [out])
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(helper.make_model(graph), str(folder / "model.onnx"))
    config = tmp_path / "workflow.json"
    config.write_text(json.dumps(make_workflow(tmp_path, folder, {})))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "'../../etc/passwd'" in err, err
    assert not (tmp_path / "out").exists()


def test_modelbuilder_filename_outside_is_a_config_error(
        tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    """Today ``extra_options.filename: ../../x.onnx`` writes outside and reports success."""
    pytest.importorskip("olivine_modelbuilder")
    model = tmp_path / "hf-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama",
                                                   "architectures": ["LlamaForCausalLM"]}))
    wf = {"input_model": {"type": "HfModel", "model_path": str(model)},
          "passes": {"mb": {"type": "ModelBuilder", "precision": "fp32",
                            "extra_options": {"filename": "../../x.onnx"}}},
          "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}
    config = tmp_path / "workflow.json"
    config.write_text(json.dumps(wf))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert "passes.mb.extra_options.filename" in err and "without '/'" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("name", ["../evil.onnx_adapter", "a/b.onnx_adapter", "..\\b.onnx_adapter"])
def test_adapter_file_name_outside_is_a_config_error(
        name: str, tmp_path: Path, onnx_model: Path,
        cli: Callable[..., tuple[int, str, str]]) -> None:
    pytest.importorskip("olivine_lora")
    wf = make_workflow(tmp_path, onnx_model, {"x": {"type": "ExtractAdapters",
                                                    "adapter_file_name": name}})
    config = tmp_path / "workflow.json"
    config.write_text(json.dumps(wf))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert "passes.x.adapter_file_name" in err and repr(name) in err
    assert not (tmp_path / "cache").exists()
