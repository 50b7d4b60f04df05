"""A corpus of bad workflow configs: each gives its exact message, exit code 2, no traceback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from olivine_testutil import HELLO_MODEL, olivine_subprocess


@pytest.fixture(autouse=True)
def _known_plugins(only_test_plugins: Any) -> None:
    """Messages list installed names: pin the set of plugins."""


def base() -> dict[str, Any]:
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(HELLO_MODEL)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{"name": "calib", "type": "HuggingfaceContainer"}],
        "evaluators": {"common": {"metrics": [{"name": "w", "type": "weight_stats",
                                               "sub_types": [{"name": "abs_sum"}]}]}},
        "passes": {"stamp": {"type": "OnnxMetadata", "model_version": 1}},
        "engine": {"host": "local_system", "target": "local_system", "evaluator": "common",
                   "output_dir": "out", "cache_dir": "cache"},
    }


Mutation = Callable[[dict[str, Any]], None]


def setp(path: str, value: Any) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


def delp(path: str) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]
    return mutate


CASES: list[tuple[str, list[Mutation], list[str]]] = [
    ("wrong type", [setp("passes.stamp.model_version", "big")],
     ['passes.stamp.model_version: expected int, got "big"']),
    ("unknown pass option", [setp("passes.stamp.doc_strng", "x")],
     ["passes.stamp.doc_strng: unknown key (did you mean 'doc_string'?)"]),
    ("unknown pass type", [setp("passes.stamp.type", "OnnxMetadat")],
     ["passes.stamp.type: unknown pass type 'OnnxMetadat' (did you mean 'OnnxMetadata'?); "
      "installed: Crash, Fail, OnnxMetadata, Scale, Sleep, Train, WhereAmI"]),
    ("validator", [setp("passes.stamp", {"type": "Scale", "factor": -1})],
     ["passes.stamp.factor: must be > 0, got -1.0"]),
    ("plugin validator", [setp("passes.stamp.metadata", {"9x": "y"})],
     ["passes.stamp.metadata: key '9x' must start with a letter or _ and hold only letters, "
      "digits, '_', '.' and '-'"]),
    ("bad enum", [setp("engine.search_strategy", {"execution_order": "join"})],
     ["engine.search_strategy.execution_order: expected one of \"joint\", \"pass-by-pass\", "
      "got \"join\" (did you mean 'joint'?)"]),
    ("old search algorithm", [setp("engine.search_strategy", {"search_algorithm": "tpee"})],
     ["engine.search_strategy.sampler: expected one of \"sequential\", \"exhaustive\", \"random\", "
      "\"tpe\", got \"tpee\" (did you mean 'tpe'?)"]),
    ("log level range", [setp("engine.log_severity_level", 7)],
     ["engine.log_severity_level: expected 0 (verbose) to 4 (quiet), got 7"]),
    ("unknown top-level key", [setp("pases", {})],
     ["pases: unknown key (did you mean 'passes'?)"]),
    ("unknown engine key", [setp("engine.output_dri", "x")],
     ["engine.output_dri: unknown key (did you mean 'output_dir'?)"]),
    ("undefined host", [setp("engine.host", "local")],
     ["engine.host: system 'local' is not defined (did you mean 'local_system'?); "
      "defined: local_system"]),
    ("undefined evaluator", [setp("engine.evaluator", "commn")],
     ["engine.evaluator: evaluator 'commn' is not defined (did you mean 'common'?); defined: common"]),
    ("undefined data config", [setp("evaluators.common.metrics.0.data_config", "calibration")],
     ["evaluators.common.metrics[0].data_config: data config 'calibration' is not defined "
      "(did you mean 'calib'?); "
      "defined: calib"]),
    ("unknown metric type", [setp("evaluators.common.metrics.0.type", "weight_stat")],
     ["evaluators.common.metrics[0].type: unknown metric type 'weight_stat' "
      "(did you mean 'weight_stats'?); installed: weight_stats"]),
    ("unknown sub-metric", [setp("evaluators.common.metrics.0.sub_types.0.name", "abs")],
     ["evaluators.common.metrics[0].sub_types[0].name: unknown sub-metric 'abs' for weight_stats "
      "(did you mean 'abs_sum'?); expected one of abs_sum, bytes"]),
    ("bad goal type", [setp("evaluators.common.metrics.0.sub_types.0.goal",
                            {"type": "max_degradation", "value": 1})],
     ["evaluators.common.metrics[0].sub_types[0].goal.type: expected one of \"threshold\", "
      "\"max-degradation\", \"min-improvement\", \"percent-max-degradation\", "
      "\"percent-min-improvement\", got \"max_degradation\" (did you mean 'max-degradation'?)"]),
    ("unknown system type", [setp("systems.local_system.type", "LocalSytem")],
     ["systems.local_system.type: unknown system type 'LocalSytem' (did you mean 'LocalSystem'?); "
      "installed: LocalSystem, PythonEnvironment"]),
    ("bad provider", [setp("systems.local_system.accelerators.0.execution_providers",
                           ["CPUExecutionProvide"])],
     ["systems.local_system.accelerators[0].execution_providers: unknown execution provider "
      "'CPUExecutionProvide' (did you mean 'CPUExecutionProvider'?); known: CPUExecutionProvider, "
      "CUDAExecutionProvider, TensorrtExecutionProvider, NvTensorRTRTXExecutionProvider, "
      "DmlExecutionProvider, ROCMExecutionProvider, MIGraphXExecutionProvider, "
      "OpenVINOExecutionProvider, QNNExecutionProvider, VitisAIExecutionProvider, "
      "CoreMLExecutionProvider, WebGpuExecutionProvider, JsExecutionProvider"]),
    ("bad device", [setp("systems.local_system.accelerators.0.device", "tpu")],
     ["systems.local_system.accelerators[0].device: expected one of \"cpu\", \"gpu\", \"npu\", "
      "got \"tpu\" (did you mean 'npu'?)"]),
    ("providers naming no one device", [delp("systems.local_system.accelerators.0.device"),
                                        setp("systems.local_system.accelerators.0.execution_providers",
                                             ["DmlExecutionProvider"])],
     ["systems.local_system.accelerators[0].device: the execution providers "
      "['DmlExecutionProvider'] do not name one device; give device (cpu, gpu or npu)"]),
    ("missing input model", [delp("input_model")],
     ["input_model: required: an object with type (HfModel or ONNXModel) and model_path"]),
    ("unknown model type", [setp("input_model.type", "OnnxModle")],
     ["input_model.type: unknown model type \"OnnxModle\" (did you mean 'ONNXModel'?); expected one of "
      "HfModel, ONNXModel, PyTorchModel"]),
    ("missing onnx file", [setp("input_model.model_path", "/nonexistent/model.onnx")],
     ["input_model.model_path: no such file or folder: '/nonexistent/model.onnx'"]),
    ("missing hf folder", [setp("input_model", {"type": "HfModel", "model_path": "./models/nothing"})],
     ["input_model.model_path: no such folder: './models/nothing' (and it is not a Hugging Face "
      "hub id of the form org/name)"]),
    ("PyTorchModel without hf_config or model_loader",
     [setp("input_model", {"type": "PyTorchModel", "config": {"model_path": "x"}})],
     ["input_model.config.model_loader: required: the name of a function in model_script that "
      "returns the torch.nn.Module (model_loader(model_path))"]),
    ("flat and nested options", [setp("passes.stamp.config", {"doc_string": "x"})],
     ["passes.stamp: options given both flat (model_version) and under 'config'; use one place"]),
    ("key at top level and in engine", [setp("output_dir", "elsewhere")],
     ["output_dir: given both at the top level and in engine; keep one (engine.output_dir)"]),
    ("passes not an object", [setp("passes", ["OnnxMetadata"])],
     ['passes: expected an object, got ["OnnxMetadata"]']),
    ("python env without path", [setp("systems.venv", {"type": "PythonEnvironment"})],
     ["systems.venv.python_environment_path: required key is missing (string)"]),
    ("python env with bad path", [setp("systems.venv", {"type": "PythonEnvironment",
                                                         "python_environment_path": "/no/venv"})],
     ["systems.venv.python_environment_path: no Python interpreter at '/no/venv' (expected a "
      "virtual environment folder with bin/python, or the interpreter itself)"]),
    ("data config without name", [setp("data_configs", [{"type": "HuggingfaceContainer"}])],
     ["data_configs[0].name: required key is missing (string)",
      "evaluators.common.metrics[0]"][:1]),
    ("several problems at once", [setp("passes.stamp.model_version", "big"),
                                  setp("engine.host", "nowhere"), setp("pases", 1)],
     ["pases: unknown key (did you mean 'passes'?)",
      'passes.stamp.model_version: expected int, got "big"',
      "engine.host: system 'nowhere' is not defined; defined: local_system"]),
    ("chain kinds", [setp("input_model", {"type": "HfModel", "model_path": str(HELLO_MODEL)})],
     ["passes.stamp: pass OnnxMetadata takes onnx models, but gets an hf model from input_model"]),
]


@pytest.mark.parametrize("mutations,expected", [(m, e) for _, m, e in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_config(tmp_path: Path, cli: Any, mutations: list[Mutation], expected: list[str]) -> None:
    cfg = copy.deepcopy(base())
    for mutate in mutations:
        mutate(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    code, _out, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 2
    assert "Traceback" not in err
    lines = [line.strip()[2:] for line in err.splitlines() if line.strip().startswith("- ")]
    assert lines == expected
    assert err.startswith(f"olivine: invalid workflow config: {len(expected)} problem")
    assert not (tmp_path / "out").exists()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20


def test_base_config_is_valid(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "good.json"
    path.write_text(json.dumps(base()))
    code, out, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 0, err
    assert "1. stamp: OnnxMetadata (example) onnx -> onnx" in out


def test_pass_from_a_known_plugin_that_is_not_installed(tmp_path: Path) -> None:
    cfg = base()
    cfg["passes"] = {"convert": {"type": "ModelBuilder", "config": {"precision": "int4"}}}
    del cfg["evaluators"], cfg["engine"]["evaluator"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    proc = olivine_subprocess("run", "--config", str(path), env={"OLIVINE_LOAD_PLUGINS": "testkit"})
    assert proc.returncode == 2
    assert ("passes.convert.type: unknown pass type 'ModelBuilder'; installed: Crash, Fail, Scale, "
            "Sleep, Train, WhereAmI; ModelBuilder is provided by the olivine-modelbuilder plugin, which "
            "is not installed") in proc.stderr


@pytest.mark.parametrize("text,message", [
    ('{"input_model": {', "not valid JSON: Expecting property name enclosed in double quotes at "
                          "line 1, column 18"),
    ("[1, 2]", "a workflow config must be an object with keys such as input_model and passes, got list"),
])
def test_unparseable_file(tmp_path: Path, cli: Any, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    code, _, err = cli("run", "--config", str(path))
    assert code == 2
    assert message in err and "Traceback" not in err


def test_missing_config_file(cli: Any) -> None:
    code, _, err = cli("run", "--config", "/nonexistent/workflow.json")
    assert code == 2
    assert err.strip() == "olivine: error: config file '/nonexistent/workflow.json' does not exist"


def test_bad_yaml(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("input_model: [\n")
    code, _, err = cli("run", "--config", str(path))
    assert code == 2 and "not valid YAML" in err


@pytest.mark.parametrize(("providers", "device"), [
    (["CUDAExecutionProvider"], "gpu"), (["CPUExecutionProvider"], "cpu"), ([], "cpu"),
    (["QNNExecutionProvider"], "npu"), (["VitisAIExecutionProvider"], "npu"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "gpu")])
def test_a_missing_device_is_inferred_from_the_providers_as_olive_does(
        tmp_path: Path, providers: list[str], device: str) -> None:
    """Olive's recipes often give only ``execution_providers``; the device follows from them."""
    cfg = base()
    cfg["systems"]["local_system"]["accelerators"] = [{"execution_providers": providers}]
    config = tmp_path / "wf.json"
    config.write_text(json.dumps(cfg))
    proc = olivine_subprocess("run", "--config", str(config), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"target: {device} / " in proc.stdout, proc.stdout + proc.stderr
