"""Item 1 of issue 12: publishing never deletes what olivine did not write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from store_helpers import leftovers, olivine, snapshot, write_workflow


def test_a_file_added_to_the_output_stops_the_rerun(tmp_path: Path, onnx_model: Path) -> None:
    config = write_workflow(tmp_path, onnx_model, {})
    assert olivine("run", "--config", str(config)).returncode == 0
    out = tmp_path / "out"
    published = snapshot(out)
    (out / "notes.txt").write_text("my notes")
    (out / "drafts").mkdir()
    onnx_model.joinpath("model.onnx.data").write_bytes(b"\1" * 5120)  # the rerun would publish other bytes
    rerun = olivine("run", "--config", str(config))
    assert rerun.returncode == 2, rerun.stderr
    assert f"output folder '{out}' holds files olivine did not write there: drafts/, notes.txt" \
           in rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert snapshot(out) == {**published, "notes.txt": b"my notes"}
    assert leftovers(tmp_path) == [] and len(list((tmp_path / "cache" / "runs").iterdir())) == 1
    # once the user's files are gone, the rerun replaces the output
    (out / "notes.txt").unlink()
    (out / "drafts").rmdir()
    assert olivine("run", "--config", str(config)).returncode == 0
    assert (out / "model.onnx.data").read_bytes() == b"\1" * 5120


def test_a_changed_published_file_stops_the_rerun(tmp_path: Path, onnx_model: Path) -> None:
    config = write_workflow(tmp_path, onnx_model, {})
    assert olivine("run", "--config", str(config)).returncode == 0
    data = tmp_path / "out" / "model.onnx.data"
    edited = data.read_bytes()[:-4] + b"edit"  # same size, other content
    data.write_bytes(edited)
    rerun = olivine("run", "--config", str(config))
    assert rerun.returncode == 2
    assert "model.onnx.data (changed since olivine wrote it)" in rerun.stderr
    assert data.read_bytes() == edited


def test_a_folder_with_a_copied_run_json_is_not_wiped(tmp_path: Path, onnx_model: Path) -> None:
    config = write_workflow(tmp_path, onnx_model, {})
    assert olivine("run", "--config", str(config)).returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    shutil.copy(tmp_path / "out" / "run.json", mine / "run.json")
    # an olivine run.json of an older olivine (no file list) does not make a folder olivine's either
    old_style = tmp_path / "old"
    old_style.mkdir()
    (old_style / "run.json").write_text(json.dumps({"olivine_version": "0.0.1"}))
    for folder, expected in ((mine, "holds files olivine did not write there: thesis.tex;"),
                             (old_style, "was made by an older olivine that kept no list")):
        before = snapshot(folder)
        result = olivine("run", "--config", str(config), "-o", str(folder),
                         "--cache_dir", str(tmp_path / "new-cache"))
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert snapshot(folder) == before
        assert not (tmp_path / "new-cache").exists()  # refused before anything was written
        assert not (tmp_path / f".{folder.name}.olivine-lock").exists()


def test_an_existing_empty_folder_is_kept_not_replaced(tmp_path: Path, onnx_model: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    config = write_workflow(tmp_path, onnx_model, {})
    assert olivine("run", "--config", str(config)).returncode == 0
    report = json.loads((out / "run.json").read_text())
    assert report["output_folder"] == "kept"
    assert sorted(report["files"]) == ["model.onnx", "model.onnx.data", "summary.txt"]
    onnx_model.joinpath("model.onnx.data").write_bytes(b"\2" * 5120)
    # a config saved into the output after the run (--save_config) is listed, so reruns may replace it
    from olivine.cli.generated import save_workflow

    save_workflow(out / "config.json", {"saved": True})
    assert olivine("run", "--config", str(config)).returncode == 0
    assert out.stat().st_ino == inode
    assert (out / "model.onnx.data").read_bytes() == b"\2" * 5120
    assert sorted(os.listdir(out)) == ["model.onnx", "model.onnx.data", "run.json", "summary.txt"]
    assert leftovers(tmp_path) == []


def test_cache_and_output_must_not_nest(tmp_path: Path, onnx_model: Path) -> None:
    for cache, out in ((tmp_path / "out" / "cache", tmp_path / "out"),
                       (tmp_path / "cache", tmp_path / "cache" / "out")):
        config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}},
                                cache_dir=str(cache), output_dir=str(out))
        result = olivine("run", "--config", str(config))
        assert result.returncode == 2
        assert f"cache_dir '{cache}' and output_dir '{out}' overlap" in result.stderr
        assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
