"""The shared local readers: every format read, every bad file refused naming the file and line.

The workflow tests calibrate a static quantization of the tiny MLP through a data config
whose rows come from these files, so a bad file is seen where users see it: exit 2, the
message, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from olivine.cli import main
from olivine.data import file_format, read_rows
from olivine.errors import UsageError

GOOD = {
    "rows.jsonl": '{"text": "one", "n": 1}\n\n{"text": "two", "n": 2}\n',
    "rows.json": '[{"text": "one", "n": 1}, {"text": "two", "n": 2}]',
    "rows.csv": "text,n\none,1\ntwo,2\n",
    "rows.tsv": "text\tn\none\t1\ntwo\t2\n",
    "rows.txt": "one\n\ntwo\n",
}


@pytest.mark.parametrize("name", list(GOOD))
def test_each_format_reads_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(GOOD[name])
    rows = read_rows(path)
    assert [r["text"] for r in rows] == ["one", "two"]


def test_parquet_reads_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "rows.parquet")
    assert read_rows(tmp_path / "rows.parquet") == [{"text": "one"}, {"text": "two"}]
    (tmp_path / "fake.parquet").write_bytes(b"nope")
    with pytest.raises(UsageError, match=r"fake\.parquet' is not a parquet file"):
        read_rows(tmp_path / "fake.parquet")


def test_data_name_selects_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "rows.data"
    path.write_text('{"text": "x"}\n')
    assert file_format(path, "json") == "json" and read_rows(path, "json") == [{"text": "x"}]
    with pytest.raises(UsageError, match=r"unknown format '\.data'"):
        file_format(path)


BAD = [
    ("bad.jsonl", '{"text": "a"}\n{"text": \n', "line 2: not a JSON record"),
    ("list.jsonl", '{"text": "a"}\n[1, 2]\n', "line 2: a JSON list, not an object"),
    ("bad.json", '[{"text": "a"},\n {"text": }]', "line 2: not valid JSON"),
    ("ragged.csv", "text,n\na,1\nb,2,3\n", "line 3: more fields than the header's 2"),
    ("binary.txt", "\x00\x01ELF", "is not text (it holds binary data)"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_naming_file_and_line(tmp_path: Path, name: str, content: str,
                                                  message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError) as err:
        read_rows(path)
    assert name in str(err.value) and message in str(err.value)


def _static_workflow(tmp_path: Path, model: Path, data: dict[str, Any]) -> Path:
    wf = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "data_configs": [{"name": "calib", **data}],
        "passes": {"q": {"type": "OnnxStaticQuantization", "data_config": "calib",
                         "calibration_samples": 4}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3,
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    return path


def test_a_bad_data_file_in_a_workflow_exits_2_naming_file_and_line(
        tmp_path: Path, onnx_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "calib.jsonl"
    bad.write_text('{"x": [0.5]}\n{"x": [0.5\n')
    wf = _static_workflow(tmp_path, onnx_model, {"load_dataset_config": {"data_files": str(bad)}})
    assert main(["run", "--config", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "calib.jsonl', line 2: not a JSON record" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_component_option_is_a_config_error(
        tmp_path: Path, onnx_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _static_workflow(tmp_path, onnx_model, {
        "type": "DummyDataContainer",
        "load_dataset_config": {"input_shapes": [[1, 16]], "input_name": ["x"]}})
    assert main(["run", "--config", str(wf)]) == 2
    err = capsys.readouterr().err
    assert ("data_configs.calib.load_dataset_config.input_name: load_dataset component "
            "'dummy_dataset' takes no option 'input_name' (did you mean 'input_names'?)") in err
    assert not (tmp_path / "out").exists()


def test_olive_containers_by_name_calibrate_a_real_quantization(
        tmp_path: Path, onnx_model: Path) -> None:
    """DummyDataContainer (params nested, Olive's other form) and RawDataContainer over files."""
    import numpy as np
    import onnx

    import olivine

    dummy = {"type": "DummyDataContainer", "load_dataset_config": {
        "type": "dummy_dataset",
        "params": {"input_shapes": [[1, 16]], "input_names": ["x"], "max_samples": 3}}}
    (tmp_path / "a").mkdir()
    result = olivine.run(_static_workflow(tmp_path / "a", onnx_model, dummy))
    assert result.output_model is not None
    assert result.output_model.attrs_dict()["calibration_samples"] == 3

    raw = tmp_path / "raw"
    (raw / "x").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        rng.standard_normal((1, 16)).astype(np.float32).tofile(raw / "x" / f"{i}.bin")
    data = {"type": "RawDataContainer", "load_dataset_config": {
        "data_dir": str(raw), "input_names": ["x"], "input_shapes": [[1, 16]],
        "input_suffix": ".bin"}}
    (tmp_path / "b").mkdir()
    result = olivine.run(_static_workflow(tmp_path / "b", onnx_model, data))
    assert result.output_model is not None
    assert result.output_model.attrs_dict()["calibration_samples"] == 4  # the pass's cap
    ops = {n.op_type for n in onnx.load(str(result.output_model.model_file())).graph.node}
    assert "QuantizeLinear" in ops or "QLinearMatMul" in ops


def test_rows_of_numbers_calibrate_and_their_file_is_in_the_cache_key(
        tmp_path: Path, onnx_model: Path) -> None:
    """DataContainer (Olive's default type) over a local file, options nested under params;
    a row is one sample (the dataloader adds the batch axis)."""
    import olivine

    rows = tmp_path / "calib.jsonl"
    rows.write_text("".join(json.dumps({"x": [0.1 * (i + j) for j in range(16)]}) + "\n"
                            for i in range(5)))
    data = {"load_dataset_config": {"type": "local_dataset", "params": {"data_files": str(rows)}}}
    wf = _static_workflow(tmp_path, onnx_model, data)
    first = olivine.run(wf)
    assert first.output_model is not None
    assert first.output_model.attrs_dict()["calibration_samples"] == 4
    assert olivine.run(wf).report["steps"][0]["status"] == "cached"
    rows.write_text(rows.read_text().replace("0.1", "0.2", 1))
    assert olivine.run(wf).report["steps"][0]["status"] == "ran"
