"""The commands as a user types them: auto-opt, capture-onnx-graph, generate, demo.

These go through the engine, so the builder runs in a child process; the step
cache is shared by the session, so a model/option pair is built once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mb_helpers import genai_greedy, node_attrs, op_counts

from olivine import OnnxModel


@pytest.fixture(scope="session")
def step_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("step-cache")


@pytest.fixture(scope="session")
def int4_output(trained_model: Path, step_cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """``olivine auto-opt --precision int4`` on the trained model, run once."""
    from olivine.testing import cli_main as main

    out = tmp_path_factory.mktemp("auto-opt") / "int4"
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["auto-opt", "-m", str(trained_model), "-o", str(out), "--precision", "int4",
                     "--use_ort_genai", "--use_model_builder", "--cache_dir", str(step_cache),
                     "--save_config"])
    return out, code, stdout.getvalue(), stderr.getvalue()


def test_auto_opt_int4(int4_output: tuple[Path, int, str, str], tokenizer: Any) -> None:
    out, code, stdout, stderr = int4_output
    assert code == 0, stderr
    assert "1. builder  ModelBuilder  ran" in stdout
    assert f"model: {out}" in stdout
    report = json.loads((out / "run.json").read_text())
    assert report["status"] == "succeeded"
    assert report["steps"][0]["pass"] == "ModelBuilder"
    assert report["steps"][0]["config"]["precision"] == "int4"
    handle = OnnxModel(path=str(out), onnx_file_name="model.onnx")
    assert op_counts(handle)["MatMulNBits"] == 11
    # INT4_CPU_DEFAULTS: rtn_last (an 8-bit LM head), block 64 (128 halved for 64-wide layers)
    assert sorted((a["bits"], a["block_size"]) for a in node_attrs(handle, "MatMulNBits")) == \
        [(4, 64)] * 10 + [(8, 64)]
    assert genai_greedy(out, tokenizer.encode("Shall I compare"), 5)


def test_saved_config_reruns_from_the_cache(int4_output: tuple[Path, int, str, str], cli: Any,
                                            tmp_path: Path) -> None:
    out, code, _, _ = int4_output
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    # auto-opt's int4 CPU defaults (olivine_modelbuilder.cli.INT4_CPU_DEFAULTS), block 128
    # halved to 64 for this model's 64-wide layers
    assert saved["passes"] == {"builder": {"type": "ModelBuilder", "precision": "int4",
                                           "int4_block_size": 64, "int4_algo": "rtn_last"}}
    assert saved["systems"]["local_system"]["accelerators"] == [
        {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]
    saved["output_dir"] = str(tmp_path / "again")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(saved))
    code, _, stderr = cli("run", "--config", str(config))
    assert code == 0, stderr
    report = json.loads((tmp_path / "again" / "run.json").read_text())
    assert report["steps"][0]["status"] == "cached"
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()


def test_dry_run_prints_the_workflow_and_runs_nothing(cli: Any, trained_model: Path,
                                                      tmp_path: Path) -> None:
    code, stdout, _ = cli("auto-opt", "-m", str(trained_model), "-o", str(tmp_path / "out"),
                          "--precision", "int8", "--device", "gpu", "--dry_run")
    assert code == 0
    workflow = json.loads(stdout)
    assert workflow["passes"]["builder"] == {"type": "ModelBuilder", "precision": "int8"}
    assert workflow["systems"]["local_system"]["accelerators"][0]["execution_providers"] == [
        "CUDAExecutionProvider"]
    assert not (tmp_path / "out").exists()
    code, _, err = cli("auto-opt", "-m", str(trained_model), "-o", str(tmp_path / "out"),
                       "--dry_run", "--save_config", str(tmp_path / "wf.json"))
    assert code == 0 and "olivine run --config" in err
    assert json.loads((tmp_path / "wf.json").read_text())["passes"]["builder"]["precision"] == \
        "fp32"
    code, stdout, _ = cli("auto-opt", "-m", str(trained_model), "-o", str(tmp_path / "out"),
                          "--precision", "int4", "--dry_run")
    assert code == 0
    assert json.loads(stdout)["passes"]["builder"] == {
        "type": "ModelBuilder", "precision": "int4", "int4_block_size": 64, "int4_algo": "rtn_last"}
    code, stdout, _ = cli("auto-opt", "-m", str(trained_model), "-o", str(tmp_path / "out"),
                          "--precision", "int4", "--device", "gpu", "--dry_run")
    assert code == 0  # CUDA: the builder's defaults, as Olive's auto-opt
    assert json.loads(stdout)["passes"]["builder"] == {"type": "ModelBuilder", "precision": "int4"}


def test_generate_streams_and_reports_speed(int4_output: tuple[Path, int, str, str],
                                            cli: Any) -> None:
    out = int4_output[0]
    code, stdout, stderr = cli("generate", "-m", str(out), "-p", "Shall I compare thee to a "
                               "summer's day?", "--chat", "--max_length", "64", "--threads", "1")
    assert code == 0, stderr
    assert stdout.strip()
    match = re.search(r"prefill: ([\d.]+) ms for (\d+) prompt tokens; decode: (\d+) tokens, "
                      r"([\d.]+) tokens/s", stderr)
    assert match, stderr
    assert int(match[2]) > 10 and 1 <= int(match[3]) <= 64 - int(match[2])
    assert float(match[1]) > 0


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_capture_onnx_graph_writes_fp32(cli: Any, trained_model: Path, step_cache: Path,
                                        tmp_path: Path, tokenizer: Any) -> None:
    out = tmp_path / "captured"
    code, _, stderr = cli("capture-onnx-graph", "-m", str(trained_model), "-o", str(out),
                          "--use_model_builder", "--cache_dir", str(step_cache), "--log_level", "3")
    assert code == 0, stderr
    ops = op_counts(OnnxModel(path=str(out), onnx_file_name="model.onnx"))
    assert ops["MatMul"] == 11 and ops["MatMulNBits"] == 0
    report = json.loads((out / "run.json").read_text())
    assert report["workflow_id"] == "capture-onnx-graph"
    assert genai_greedy(out, tokenizer.encode("Shall I"), 3)


def test_demo(cli: Any, tmp_path: Path) -> None:
    code, stdout, stderr = cli("demo", "-o", str(tmp_path / "demo"), "--cache_dir",
                               str(tmp_path / "cache"), "--train_seconds", "3", "--max_length",
                               "48", "--threads", "1")
    assert code == 0, stderr
    assert stdout.startswith("user: Shall I compare thee to a summer's day?\nassistant: ")
    assert "demo: step 1: loss" in stderr and "prefill:" in stderr
    models = list((tmp_path / "cache" / "demo-models").iterdir())
    assert len(models) == 1 and (models[0] / "model.safetensors").is_file()
    report = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert report["steps"][0]["config"]["precision"] == "int4"
    # tied embeddings: the builder shares one int4 matrix for the embedding and the LM head
    assert op_counts(OnnxModel(path=str(tmp_path / "demo"),
                               onnx_file_name="model.onnx"))["GatherBlockQuantized"] == 1


@pytest.mark.slow
def test_demo_with_its_defaults(cli: Any, tmp_path: Path) -> None:
    """The README's first command, as typed (45 s of training on this machine)."""
    code, stdout, stderr = cli("demo", "-o", str(tmp_path / "demo"), "--cache_dir",
                               str(tmp_path / "cache"))
    assert code == 0, stderr
    reply = stdout.split("assistant: ", 1)[1]
    assert len(reply.split()) >= 2
    model = next((tmp_path / "cache" / "demo-models").iterdir())
    report = json.loads((model / "olivine_training.json").read_text())["report"]
    assert report["seconds"] >= 45 and report["last_loss"] < report["first_loss"] - 2.5
