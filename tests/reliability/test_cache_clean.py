"""Item 6 of issue 12 (and item 7's ``cache ls`` case): ``olivine cache clean`` is safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from store_helpers import ENV, olivine, start, step_folders, wait_for, write_workflow

from olivine_testutil import executions


def test_a_negative_age_or_size_is_refused(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    assert cli("run", "--config", str(write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}})))[0] == 0
    cache = str(tmp_path / "cache")
    for flag, value, expected in (("--older-than", "-5d", "--older-than: '-5d' is negative"),
                                  ("--max-size", "-1G", "--max-size: '-1G' is negative"),
                                  ("--max-size", "lots", "--max-size: expected a number with K, M, G")):
        code, _, err = cli("cache", "clean", "--cache_dir", cache, f"{flag}={value}")
        assert code == 2 and expected in err, err
        assert len(step_folders(tmp_path / "cache")) == 1


def test_a_folder_that_is_not_a_cache_is_refused(tmp_path: Path, cli: Any) -> None:
    project = tmp_path / "project"
    (project / "state").mkdir(parents=True)
    (project / "state" / "plan.md").write_text("keep")
    (project / "tmp" / "build").mkdir(parents=True)
    (project / "tmp" / "build" / "a.o").write_text("keep")
    result = olivine("cache", "clean", "--cache_dir", str(project))
    assert result.returncode == 2, result.stderr
    assert f"'{project}' is not an olivine cache (it has no CACHEDIR.TAG written by olivine)" in result.stderr
    for action in ("ls", "verify"):
        code, _, err = cli("cache", action, "--cache_dir", str(project))
        assert code == 2 and "is not an olivine cache" in err
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*")) == [
        "state", "state/plan.md", "tmp", "tmp/build", "tmp/build/a.o"]


def test_clean_keeps_what_a_running_workflow_uses(tmp_path: Path, onnx_model: Path, runs_file: Path,
                                                  cli: Any) -> None:
    first = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}}, name="a.json",
                           output_dir=str(tmp_path / "a-out"))
    assert cli("run", "--config", str(first))[0] == 0
    longer = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0},
                                                   "slow": {"type": "Sleep", "seconds": 2}})
    running = start("run", "--config", str(longer))
    wait_for(lambda: executions(runs_file) == ["Scale a", "Sleep slow"])  # a came from the cache
    code, out, err = cli("cache", "clean", "--cache_dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert "removed 0 steps" in out and "kept 1 in use by a running workflow" in out
    assert "removed 1 finished runs' records" in out  # the first run's, not the running one's
    assert running.poll() is None  # still running: the check above happened while it used step a
    _, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["cached", "ran"]
    assert (tmp_path / "out" / "model.onnx.data").read_bytes() == \
           (tmp_path / "a-out" / "model.onnx.data").read_bytes()
    # once the run is over, everything goes, its record in runs/ too
    cleaned = olivine("cache", "clean", "--cache_dir", str(tmp_path / "cache"))
    assert "removed 2 steps" in cleaned.stdout and "removed 1 finished runs' records" in cleaned.stdout
    assert step_folders(tmp_path / "cache") == [] and list((tmp_path / "cache" / "runs").iterdir()) == []


def test_max_size_removes_the_oldest_first(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0},
                                                   "b": {"type": "Scale", "factor": 1.0, "pad": 3000},
                                                   "c": {"type": "Scale", "factor": 0.5}})
    assert cli("run", "--config", str(config))[0] == 0
    cache = str(tmp_path / "cache")
    rows = json.loads(cli("cache", "ls", "--cache_dir", cache, "--json")[1])
    assert [r["step"] for r in rows] == ["a", "b", "c"]  # oldest first
    sizes = {r["step"]: r["size_bytes"] for r in rows}
    limit = sizes["b"] + sizes["c"]
    code, out, _ = cli("cache", "clean", "--cache_dir", cache, "--max-size", str(limit))
    assert code == 0 and "removed 1 steps" in out
    assert [r["step"] for r in json.loads(cli("cache", "ls", "--cache_dir", cache, "--json")[1])] \
           == ["b", "c"]
    assert "removed 1 steps" in cli("cache", "clean", "--cache_dir", cache, "--max-size", str(limit - 1))[1]
    assert [r["step"] for r in json.loads(cli("cache", "ls", "--cache_dir", cache, "--json")[1])] == ["c"]
    assert len(list((tmp_path / "cache" / "runs").iterdir())) == 1  # --max-size alone keeps run records


def test_cache_ls_with_an_unreadable_date(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    assert cli("run", "--config", str(write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}})))[0] == 0
    [entry] = step_folders(tmp_path / "cache")
    record = json.loads((entry / "step.json").read_text())
    record["created"] = "yesterday"
    (entry / "step.json").write_text(json.dumps(record))
    cache = str(tmp_path / "cache")
    listed = olivine("cache", "ls", "--cache_dir", cache)
    assert listed.returncode == 0, listed.stderr
    assert "Scale" in listed.stdout and listed.stdout.rstrip().endswith("?")
    assert json.loads(cli("cache", "ls", "--cache_dir", cache, "--json")[1])[0]["created"] is None
    # an entry without a readable date counts as the oldest
    assert "removed 1 steps" in cli("cache", "clean", "--cache_dir", cache, "--older-than", "1d")[1]


def test_the_cache_works_without_fcntl(tmp_path: Path) -> None:
    """Item 9's cache part: locks come from filelock, so no fcntl is needed (as on Windows)."""
    script = f"""
import sys
sys.modules["fcntl"] = None
from pathlib import Path
import olivine.cache, olivine.cacheclean, olivine.output
cache = olivine.cache.Cache({str(tmp_path / 'cache')!r})
with cache.lock("k"):
    print("locked")
print(cache.clean())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **ENV})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "locked", "CleanReport(removed=0, freed=0, in_use=0, runs_removed=0)"]


@pytest.mark.parametrize("where", ["engine", "cache_config"])
def test_clean_cache_empties_the_step_cache_before_the_run(
        where: str, tmp_path: Path, onnx_model: Path, runs_file: Path, cli: Any) -> None:
    """Olive's ``clean_cache``: the second run computes its step again instead of taking the cache."""
    config = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}})
    assert cli("run", "--config", str(config))[0] == 0
    assert cli("run", "--config", str(config))[0] == 0
    assert executions(runs_file) == ["Scale a"]  # the second run took the cached step
    first = (tmp_path / "out" / "model.onnx").read_bytes()
    flag = ({"clean_cache": True} if where == "engine"
            else {"cache_config": {"cache_dir": str(tmp_path / "cache"), "clean_cache": True}})
    cleaning = write_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}},
                              name="clean.json", **flag)
    code, _, err = cli("run", "--config", str(cleaning))
    assert code == 0, err
    assert executions(runs_file) == ["Scale a", "Scale a"]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["clean_cache"] == {"removed": 1, "freed_bytes": report["clean_cache"]["freed_bytes"],
                                     "in_use": 0}
    assert report["clean_cache"]["freed_bytes"] > 0
    assert (tmp_path / "out" / "model.onnx").read_bytes() == first
    assert len(step_folders(tmp_path / "cache")) == 1  # the step this run computed
