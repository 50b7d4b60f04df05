"""A plugin adds a model kind through ``register_model_kinds``: read from input_model, run, cached."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine_testutil import olivine_subprocess

_PLUGIN = """
    from pathlib import Path
    from typing import Any, ClassVar

    import attrs

    import olivine
    from olivine import ConfigError, ModelHandle, OnnxModel, Pass, PassContext


    @attrs.frozen
    class NpzModel(ModelHandle):
        '''A weight matrix in an .npz file (key "w"): y = x @ w.'''

        kind: ClassVar[str] = "npz"
        input_types: ClassVar[tuple[str, ...]] = ("NpzModel",)
        transpose: bool = False

        @classmethod
        def from_input_config(cls, config: dict[str, Any], base_dir: Path) -> "NpzModel":
            unknown = sorted(set(config) - {"model_path", "transpose"})
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r}; NpzModel takes model_path, transpose")
            if "model_path" not in config:
                raise ConfigError("model_path: required, an .npz file")
            path = (base_dir / config["model_path"]).resolve()
            if not path.is_file():
                raise ConfigError(f"model_path: no such file {config['model_path']!r}")
            return cls(path=str(path), transpose=bool(config.get("transpose", False)))


    class NpzToOnnx(Pass):
        '''Write an ONNX MatMul whose weight is the npz matrix.'''

        name = "NpzToOnnx"
        accepts = ("npz",)
        produces = "onnx"

        def run(self, model: Any, config: Any, context: PassContext) -> OnnxModel:
            import numpy as np
            import onnx
            from onnx import TensorProto, helper, numpy_helper

            w = np.load(model.path)["w"].astype(np.float32)
            if model.transpose:
                w = w.T
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["x", "w"], ["y"])], "npz",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w.shape[0]])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w.shape[1]])],
                [numpy_helper.from_array(w, "w")])
            proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            onnx.save(proto, str(context.work_dir / "model.onnx"))
            return OnnxModel(path=str(context.work_dir), onnx_file_name="model.onnx")


    @olivine.hookimpl
    def register_model_kinds(register):
        register(NpzModel)


    @olivine.hookimpl
    def register_passes(register):
        register(NpzToOnnx)
"""


def _install(root: Path) -> dict[str, str]:
    info = root / "site" / "olivine_npz-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: olivine-npz\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[olivine]\nolivine-npz = olivine_npz\n")
    (root / "site" / "olivine_npz.py").write_text(textwrap.dedent(_PLUGIN))
    return {"PYTHONPATH": str(root / "site")}


def _config(tmp_path: Path, **model: object) -> Path:
    cfg = {"input_model": {"type": "NpzModel", **model},
           "passes": {"conv": {"type": "NpzToOnnx"}},
           "output_dir": "out", "cache_dir": "cache"}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    return path


def test_plugin_model_kind_is_read_run_and_cached(tmp_path: Path) -> None:
    env = _install(tmp_path)
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.savez(tmp_path / "w.npz", w=w)
    proc = olivine_subprocess("plugins", "--json", env=env)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["olivine-npz"]["model_kinds"] == ["npz"]
    assert rows["olivine-models"]["model_kinds"] == ["adapter", "composite", "hf", "onnx", "pytorch"]

    cfg = _config(tmp_path, model_path="w.npz", transpose=True)
    proc = olivine_subprocess("run", "--config", str(cfg), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import onnxruntime as ort

    model = next((tmp_path / "out").rglob("model.onnx"))
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w.T, rtol=1e-5, atol=1e-6)

    # a second run is a cache hit: the input handle of the plugin's kind is read back by kind
    proc = olivine_subprocess("run", "--config", str(cfg), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cache" in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize(("model", "message"), [
    ({}, "input_model: model_path: required, an .npz file"),
    ({"model_path": "w.npz", "transpoze": True}, "input_model: unknown key 'transpoze'"),
    ({"model_path": "nope.npz"}, "input_model: model_path: no such file 'nope.npz'"),
])
def test_plugin_model_kind_config_errors_exit_2(tmp_path: Path, model: dict[str, object],
                                                message: str) -> None:
    env = _install(tmp_path)
    np.savez(tmp_path / "w.npz", w=np.eye(3, dtype=np.float32))
    proc = olivine_subprocess("run", "--config", str(_config(tmp_path, **model)), env=env,
                              cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_input_type_lists_plugin_types(tmp_path: Path) -> None:
    env = _install(tmp_path)
    proc = olivine_subprocess("run", "--config", str(_config(tmp_path, model_path="w.npz")),
                              env=env, cwd=tmp_path)
    assert proc.returncode == 2  # no w.npz here
    cfg = json.loads((tmp_path / "run.json").read_text())
    cfg["input_model"]["type"] = "NpzModle"
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    proc = olivine_subprocess("run", "--config", str(tmp_path / "run.json"), env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown model type \"NpzModle\" (did you mean 'NpzModel'?)" in proc.stderr
    assert "NpzModel" in proc.stderr.split("expected one of")[1]


def test_schema_lists_a_plugin_kinds_input_type(cli: Any) -> None:
    """``olivine schema`` offers the host's input forms and a plugin kind's ``input_types``, with
    the options of its ``input_spec``."""
    import types
    from typing import ClassVar

    import attrs

    from olivine import ModelHandle, hookimpl
    from olivine.testing import using_plugin

    @attrs.frozen
    class TableSpec:
        """Options of a TableModel input."""

        type: str
        model_path: str = attrs.field(metadata={"help": "a .csv file"})
        delimiter: str = ","

    @attrs.frozen
    class TableModel(ModelHandle):
        """A table of weights in a csv file."""

        kind: ClassVar[str] = "table"
        input_types: ClassVar[tuple[str, ...]] = ("TableModel",)
        input_spec: ClassVar[type] = TableSpec

        @classmethod
        def from_input_config(cls, config: dict[str, Any], base_dir: Path) -> TableModel:
            return cls(path=str(base_dir / config["model_path"]))

    @hookimpl
    def register_model_kinds(register: Any) -> None:
        register(TableModel)

    plugin = types.SimpleNamespace(__name__="table-plugin", register_model_kinds=register_model_kinds)
    with using_plugin(plugin):
        code, out, err = cli("schema")
    assert code == 0, err
    forms = json.loads(out)["properties"]["input_model"]["anyOf"]
    [table] = [f for f in forms if f["properties"]["type"].get("enum") == ["TableModel"]]
    assert table["description"] == "A table of weights in a csv file. (plugin table-plugin)"
    assert table["properties"]["delimiter"]["default"] == ","
    assert set(table["required"]) == {"type", "model_path"}
    described = " ".join(f.get("description", "") for f in forms)
    assert all(name in described for name in ("HfModel", "ONNXModel", "PyTorchModel"))
