"""User scripts written for Olive run unchanged: ``from olive.data.registry import Registry``.

The script below is what Olive's recipes do (a dataset, a pre-process, a dataloader and a
post-process registered with Olive's decorators); it calibrates a real static quantization
of the tiny MLP. olivine installs no ``olive`` package: the stand-in exists only while the
script loads, and a real Olive, when importable, is used instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import olivine
from olivine.cli import main

SCRIPT = '''
import numpy as np
from olive.data.registry import Registry
from olive.constants import Framework

SEEN = []


@Registry.register_dataset()
def mlp_calibration_dataset(data_dir, max_samples=8):
    rows = [line.split() for line in open(f"{data_dir}/values.txt").read().splitlines()]
    return [np.asarray(r, dtype=np.float32) for r in rows][:max_samples]


@Registry.register_pre_process()
def mlp_pre_process(dataset, scale=1.0):
    return [({"x": row * scale}, 0) for row in dataset]


@Registry.register_dataloader("MLP_Loader")
def mlp_loader(dataset, batch_size=1):
    SEEN.append(Framework.ONNX)
    for i in range(0, len(dataset), batch_size):
        chunk = dataset[i:i + batch_size]
        yield {"x": np.stack([c[0]["x"] for c in chunk])}, np.zeros(len(chunk))


@Registry.register_post_process()
def mlp_post_process(output):
    return output.argmax(-1)
'''


def _workflow(tmp_path: Path, model: Path, data: dict, name: str = "wf.json") -> Path:
    wf = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "data_configs": [{"name": "calib", "user_script": "user_script.py",
                          "script_dir": str(tmp_path / "scripts"), **data}],
        "passes": {"q": {"type": "OnnxStaticQuantization", "data_config": "calib",
                         "quant_format": "QDQ"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3,
    }
    path = tmp_path / name
    path.write_text(json.dumps(wf))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A recipe folder: the Olive user script and its data files."""
    import numpy as np

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "user_script.py").write_text(SCRIPT)
    (tmp_path / "data").mkdir()
    rows = np.random.default_rng(0).standard_normal((6, 16))
    (tmp_path / "data" / "values.txt").write_text(
        "\n".join(" ".join(f"{v:.4f}" for v in r) for r in rows))
    return tmp_path


DATA = {"load_dataset_config": {"type": "mlp_calibration_dataset",
                                "params": {"data_dir": "data", "max_samples": 5}},
        "pre_process_data_config": {"type": "mlp_pre_process", "scale": 0.5},
        "post_process_data_config": {"type": "mlp_post_process"},
        "dataloader_config": {"type": "mlp_loader", "batch_size": 2}}


def test_an_olive_user_script_calibrates_a_static_quantization(
        project: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    monkeypatch.chdir(project)
    result = olivine.run(_workflow(project, onnx_model, DATA))
    assert result.output_model is not None
    # 5 samples in batches of 2: 3 calibration batches, all from the script's components
    assert result.output_model.attrs_dict()["calibration_samples"] == 3
    ops = [n.op_type for n in onnx.load(str(result.output_model.model_file())).graph.node]
    assert ops.count("QuantizeLinear") >= 2
    # the stand-in was used (this environment has no Olive) and left no finder behind
    assert getattr(sys.modules["olive.data.registry"], "__olivine_stand_in__", False)
    assert not any(type(f).__name__ == "OliveFinder" for f in sys.meta_path)


def test_a_misspelt_option_of_a_script_component_exits_2(
        project: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project)
    data = {**DATA, "pre_process_data_config": {"type": "mlp_pre_process", "scal": 2}}
    assert main(["run", "--config", str(_workflow(project, onnx_model, data))]) == 2
    err = capsys.readouterr().err
    assert ("data_configs.calib.pre_process_data_config.scal: pre_process_data component "
            "'mlp_pre_process' takes no option 'scal' (did you mean 'scale'?)") in err
    assert not (project / "out").exists()


def test_an_unknown_component_lists_the_known_ones(
        project: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project)
    data = {**DATA, "dataloader_config": {"type": "mlp_loadr"}}
    assert main(["run", "--config", str(_workflow(project, onnx_model, data))]) == 2
    err = capsys.readouterr().err
    assert "dataloader_config.type: unknown dataloader component 'mlp_loadr'" in err
    assert "did you mean 'mlp_loader'?" in err and "Traceback" not in err


def test_an_olive_module_olivine_does_not_provide_is_named(
        project: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project)
    (project / "scripts" / "user_script.py").write_text(
        "from olive.passes.onnx.common import get_external_data_config\n" + SCRIPT)
    assert main(["run", "--config", str(_workflow(project, onnx_model, DATA))]) == 2
    err = capsys.readouterr().err
    assert "user_script.py cannot be imported" in err
    assert "not 'olive.passes'" in err


def test_a_real_olive_is_used_when_installed(project: Path, tmp_path: Path) -> None:
    """With an ``olive`` package importable, the script gets it; its registry is read."""
    fake = tmp_path / "site" / "olive" / "data"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("REAL = True\n")
    (fake / "__init__.py").write_text("")
    (fake / "registry.py").write_text(textwrap.dedent('''
        class Registry:
            _REGISTRY = {"load_dataset": {}, "pre_process_data": {}, "post_process_data": {},
                         "dataloader": {}}

            @classmethod
            def register_dataset(cls, name=None):
                def deco(f):
                    cls._REGISTRY["load_dataset"][(name or f.__name__).lower()] = f
                    return f
                return deco
        '''))
    (project / "scripts" / "real.py").write_text(textwrap.dedent('''
        import olive
        from olive.data.registry import Registry
        assert olive.REAL

        @Registry.register_dataset()
        def real_rows():
            return [{"text": "from the real olive"}]
        '''))
    code = textwrap.dedent(f'''
        import sys
        from olivine.config.sections import DataConfig
        from olivine.data import resolve
        dc = DataConfig(name="d", user_script={str(project / "scripts" / "real.py")!r},
                        load_dataset_config={{"type": "real_rows"}})
        resolved = resolve(dc, kinds=("load_dataset",))
        print(resolved.load_dataset())
        print(getattr(sys.modules["olive"], "__olivine_stand_in__", False))
        ''')
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[{'text': 'from the real olive'}]", "False"]


DRIVER = '''
import json
import sys

import olive.workflows
from olive import run as olive_run

config = json.load(open(sys.argv[1]))
output = olive.workflows.run(config)
if output is None or not output.has_output_model():
    raise Exception("Model file is not generated")
config["output_dir"] = config["output_dir"] + "-again"
assert olive_run(config).get_output_models()
print("done", output.output_model.kind)
'''


def test_a_driver_script_runs_with_olivine_script(project: Path, onnx_model: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``olivine script FILE ARGS``: a recipe's driver calling olive.workflows.run, unchanged."""
    wf = {"input_model": {"type": "ONNXModel", "model_path": str(onnx_model)},
          "passes": {"scale": {"type": "Scale", "factor": 0.5}},
          "output_dir": str(project / "out"), "cache_dir": str(project / "cache"),
          "log_severity_level": 3}
    (project / "wf.json").write_text(json.dumps(wf))
    (project / "driver.py").write_text(DRIVER)
    assert main(["script", str(project / "driver.py"), str(project / "wf.json")]) == 0
    assert "done onnx" in capsys.readouterr().out
    assert (project / "out").is_dir() and (project / "out-again").is_dir()
    assert not any(type(f).__name__ == "OliveFinder" for f in sys.meta_path)


POST = '''
import numpy as np
from olive.data.registry import Registry


@Registry.register_dataset()
def mlp_rows(count=6):
    # unnamed inputs (Olive's DummyDataset style): fed to the model's inputs in order
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(16).astype(np.float32), 3) for _ in range(count)]


@Registry.register_post_process()
def always_three(output):
    # Olive calls it with the single output as a torch tensor
    assert type(output).__name__ == "Tensor" and output.shape[-1] > 3
    return output.argmax(-1) * 0 + 3
'''


def test_a_user_script_post_process_makes_the_accuracy_predictions(
        project: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    (project / "scripts" / "post.py").write_text(POST)
    wf = {"input_model": {"type": "ONNXModel", "model_path": str(onnx_model)},
          "data_configs": [{"name": "rows", "user_script": "scripts/post.py",
                            "load_dataset_config": {"type": "mlp_rows"},
                            "post_process_data_config": {"type": "always_three"},
                            "dataloader_config": {"batch_size": 2}}],
          "evaluators": {"e": {"metrics": [
              {"name": "acc", "type": "accuracy", "data_config": "rows",
               "sub_types": [{"name": "accuracy_score"}]},
              {"name": "lat", "type": "latency", "data_config": "rows", "sub_types": [{"name": "avg"}],
               "user_config": {"warmup_num": 1, "repeat_test_num": 2}}]}},
          "evaluator": "e", "evaluate_input_model": False,
          "passes": {"scale": {"type": "Scale", "factor": 1.0}},
          "output_dir": str(project / "out"), "cache_dir": str(project / "cache"),
          "log_severity_level": 3}
    result = olivine.run(wf)
    assert result.metrics["output_model"]["acc"]["accuracy_score"] == 1.0
    assert result.metrics["output_model"]["lat"]["avg"] > 0
