"""Item 2 of issue 12: a cache hit is the bytes a fresh build gives; ``olivine cache verify``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_helpers import olivine, snapshot, step_folders, write_workflow

from olivine_testutil import executions


def _truncate(entry: Path) -> None:
    f = entry / "output" / "model.onnx"
    f.write_bytes(f.read_bytes()[:100])


def _delete_data(entry: Path) -> None:
    (entry / "output" / "model.onnx.data").unlink()


def _same_size_other_bytes(entry: Path) -> None:
    f = entry / "output" / "model.onnx.data"
    f.write_bytes(b"\0" * f.stat().st_size)


def _edit_record(entry: Path) -> None:
    record = json.loads((entry / "step.json").read_text())
    record["output_model"]["onnx_file_name"] = "other.onnx"
    (entry / "step.json").write_text(json.dumps(record))


def _add_file(entry: Path) -> None:
    (entry / "output" / "genai_config.json").write_text("{}")


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated .onnx": (_truncate, "output/model.onnx has 100 bytes, 275 were stored"),
    "deleted .onnx.data": (_delete_data, "output/model.onnx.data is missing"),
    "same size, other bytes": (_same_size_other_bytes, "output/model.onnx.data does not have the content "
                                                       "that was stored (sha256 differs)"),
    "edited step record": (_edit_record, "step.json was changed after the step was stored"),
    "added genai_config.json": (_add_file, "output/genai_config.json was not written by the step"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_discarded_and_the_step_recomputed(
        damage: str, tmp_path: Path, onnx_model: Path, runs_file: Path, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 3.0}})
    assert cli("run", "--config", str(config))[0] == 0
    fresh = snapshot(tmp_path / "out")
    [entry] = step_folders(tmp_path / "cache")
    change, problem = DAMAGE[damage]
    change(entry)
    code, _, err = cli("run", "--config", str(config))
    assert code == 0, err
    assert f"(step 'a') is damaged: {problem}; removing it and computing the step again" in caplog.text
    assert executions(runs_file) == ["Scale a", "Scale a"]
    again = snapshot(tmp_path / "out")
    assert again["model.onnx"] == fresh["model.onnx"]
    assert again["model.onnx.data"] == fresh["model.onnx.data"]
    assert json.loads(again["run.json"])["steps"][0]["status"] == "ran"
    # the recomputed entry is sound: the next run takes it
    assert cli("run", "--config", str(config))[0] == 0
    assert executions(runs_file) == ["Scale a", "Scale a"]


def test_a_truncated_cached_model_is_not_shipped(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    """As a user sees it: a truncated model in the cache, a warning, the right bytes."""
    config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 3.0}})
    assert cli("run", "--config", str(config))[0] == 0
    fresh = (tmp_path / "out" / "model.onnx.data").read_bytes()
    data = step_folders(tmp_path / "cache")[0] / "output" / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    rerun = olivine("run", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr
    assert "WARNING olivine.cache: cache entry " in rerun.stderr
    assert "output/model.onnx.data has 1000 bytes, 5120 were stored" in rerun.stderr
    assert (tmp_path / "out" / "model.onnx.data").read_bytes() == fresh


def test_cache_verify_reads_every_byte(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 3.0},
                                                   "b": {"type": "Scale", "factor": 0.5}})
    assert cli("run", "--config", str(config))[0] == 0
    cache = str(tmp_path / "cache")
    ok = olivine("cache", "verify", "--cache_dir", cache)
    assert ok.returncode == 0 and "verified 2 steps" in ok.stdout and ": 0 damaged" in ok.stdout
    # other bytes with the same size and mtime: only reading the file shows it
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    key_b = record["steps"][1]["key"]
    data = tmp_path / "cache" / "steps" / key_b / "output" / "model.onnx.data"
    st = data.stat()
    data.write_bytes(bytes(reversed(data.read_bytes())))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    bad = olivine("cache", "verify", "--cache_dir", cache)
    assert bad.returncode == 1
    assert f"{key_b[:16]}  b: output/model.onnx.data does not have the content that was stored " \
           "(sha256 differs) (removed)" in bad.stdout
    assert [p.name for p in step_folders(tmp_path / "cache")] == [record["steps"][0]["key"]]
    again = olivine("cache", "verify", "--cache_dir", cache, "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []
