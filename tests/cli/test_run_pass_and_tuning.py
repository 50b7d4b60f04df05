"""``olivine run-pass``, ``olivine tune-session-params`` and Olive's other ``run`` flags, end to end
on tiny local models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from olivine_testutil import HELLO_MODEL, tiny_random_llm

Cli = Callable[..., tuple[int, str, str]]


def _hello_feeds() -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(HELLO_MODEL / "model.onnx"), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 3 for d in sess.get_inputs()[0].shape]
    return {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape)
            .astype(np.float32)}


def _run(folder: Path, feeds: dict[str, np.ndarray], name: str = "model.onnx") -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0], dtype=np.float32)


def test_list_passes(cli: Cli) -> None:
    code, out, _ = cli("run-pass", "--list-passes")
    assert code == 0
    assert "OnnxFloatToFloat16" in out and "ModelBuilder" in out and "Total:" in out


def test_run_pass_runs_one_pass_with_its_config(cli: Cli, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "out"
    code, _, err = cli("run-pass", "--pass-name", "OnnxFloatToFloat16", "--pass-config",
                       json.dumps({"keep_io_types": True}), "-m", str(HELLO_MODEL), "-o", str(out),
                       "--cache_dir", str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    graph = onnx.load(str(out / "model.onnx")).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    feeds = _hello_feeds()
    want, got = _run(HELLO_MODEL, feeds), _run(out, feeds)
    # fp16 weights: measured max |diff| 2e-3 of outputs up to ~3
    assert np.abs(got - want).max() <= 1e-2 * max(1.0, float(np.abs(want).max()))
    report = json.loads((out / "run.json").read_text())
    assert [s["pass"] for s in report["steps"]] == ["OnnxFloatToFloat16"]
    # the same command again is a cache hit (same engine as `olivine run`)
    code, stdout, err = cli("run-pass", "--pass-name", "OnnxFloatToFloat16", "--pass-config",
                            json.dumps({"keep_io_types": True}), "-m", str(HELLO_MODEL), "-o",
                            str(out), "--cache_dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert "cached" in stdout


@pytest.mark.parametrize(("flags", "named"), [
    (["--pass-name", "NoSuchPass"], "--pass-name"),
    (["--pass-name", "OnnxFloatToFloat16", "--pass-config", "{bad"], "--pass-config"),
    (["--pass-name", "OnnxFloatToFloat16", "--pass-config", '{"no_such_option": 1}'],
     "no_such_option"),
    ([], "--pass-name"),
    (["--pass-name", "OnnxFloatToFloat16", "--memory", "8GB"], "--memory"),
])
def test_run_pass_bad_input_exits_2(cli: Cli, tmp_path: Path, flags: list[str], named: str
                                    ) -> None:
    code, _, err = cli("run-pass", "-m", str(HELLO_MODEL), "-o", str(tmp_path / "o"), *flags)
    assert code == 2, err
    assert named in err


def test_tune_session_params_writes_settings_ort_and_genai_read(cli: Cli, tmp_path: Path) -> None:
    import onnxruntime_genai as og

    llm = tiny_random_llm(tmp_path / "llm", "qwen2")
    built = tmp_path / "fp32"
    code, _, err = cli("optimize", "-m", str(llm), "-o", str(built), "--cache_dir",
                       str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    out = tmp_path / "tuned"
    code, stdout, err = cli("tune-session-params", "-m", str(built), "-o", str(out),
                            "--intra_thread_num_list", "1", "2", "--opt_level_list", "99",
                            "--cache_dir", str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    assert "| rank | setting |" in stdout and "intra=1" in stdout and "intra=2" in stdout
    best = json.loads((out / "cpu-cpu.json").read_text())  # Olive's file name
    assert best == json.loads((out / "inference_settings.json").read_text())
    # the ranking may pick ONNX Runtime's own defaults (the baseline row, no thread count) on a
    # machine where they measure fastest; otherwise one of the listed counts
    threads = best.get("session_options", {}).get("intra_op_num_threads")
    assert threads in (None, 1, 2)
    genai = json.loads((out / "genai_config.json").read_text())
    assert genai["model"]["decoder"].get("session_options", {}).get("intra_op_num_threads") == threads
    model = og.Model(str(out))  # onnxruntime-genai loads the tuned folder
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=8)
    generator = og.Generator(model, params)
    generator.append_tokens([1, 2, 3])
    assert np.isfinite(np.asarray(generator.get_logits())).all()


def test_tune_session_params_refuses_a_hugging_face_model(cli: Cli, tmp_path: Path) -> None:
    llm = tiny_random_llm(tmp_path / "llm", "qwen2")
    code, _, err = cli("tune-session-params", "-m", str(llm), "-o", str(tmp_path / "o"))
    assert code == 2
    assert "--model_name_or_path" in err and "ONNX model" in err


def test_run_model_flags_replace_the_input_model(cli: Cli, tmp_path: Path, write_config: Callable[
        ..., Path]) -> None:
    config = write_config({"input_model": {"type": "ONNXModel", "model_path": "missing.onnx"},
                           "passes": {"fp16": {"type": "OnnxFloatToFloat16",
                                               "keep_io_types": True}},
                           "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "c")})
    code, _, err = cli("run", "--config", str(config), "--log_level", "3")
    assert code == 2  # the workflow's own model is missing
    temp = tmp_path / "tmp"
    code, _, err = cli("run", "--config", str(config), "-m", str(HELLO_MODEL), "--tempdir",
                       str(temp), "--log_level", "3", "--disable_telemetry")
    assert code == 0, err
    assert temp.is_dir()
    feeds = _hello_feeds()
    assert np.abs(_run(tmp_path / "out", feeds) - _run(HELLO_MODEL, feeds)).max() < 1e-2


def test_run_list_required_packages_and_package_config(cli: Cli, tmp_path: Path,
                                                       write_config: Callable[..., Path]) -> None:
    config = write_config({"input_model": {"type": "ONNXModel", "model_path": str(HELLO_MODEL)},
                           "passes": {"fp16": {"type": "OnnxFloatToFloat16"}},
                           "output_dir": str(tmp_path / "out")})
    code, out, err = cli("run", "--config", str(config), "--list_required_packages")
    assert code == 0, err
    assert "olivine-transformers" in out
    assert not (tmp_path / "out").exists()  # nothing ran
    assert (tmp_path / "olivine_requirements.txt").read_text().split() == ["olivine-transformers"]
    code, _, err = cli("run", "--config", str(config), "--package-config", "pkg.json")
    assert code == 2 and "--package-config" in err


@pytest.mark.slow
def test_run_test_flag_runs_on_a_random_two_layer_copy(cli: Cli, tmp_path: Path,
                                                       write_config: Callable[..., Path]) -> None:
    from transformers import AutoConfig

    llm = tiny_random_llm(tmp_path / "llm", "qwen2", num_hidden_layers=3)
    config = write_config({"input_model": {"type": "HfModel", "model_path": str(llm)},
                           "passes": {"mb": {"type": "ModelBuilder", "precision": "fp32"}},
                           "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "c")})
    folder = tmp_path / "test-model"
    code, _, err = cli("run", "--config", str(config), "--test", str(folder), "--log_level", "3")
    assert code == 0, err
    assert AutoConfig.from_pretrained(folder).num_hidden_layers == 2
    genai = json.loads((tmp_path / "out" / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["num_hidden_layers"] == 2
    assert (tmp_path / "out" / "olive_test_output.json").is_file()  # Olive's marker
