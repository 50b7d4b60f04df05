"""Item 5 of issue 12: concurrent and interrupted publishing, and a full disk while publishing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import ENV, kill, leftovers, olivine, snapshot, start, wait_for, write_workflow

from olivine.output import foreign_files

#: ``olivine ARGS`` with a publish step slowed down, so a test can SIGKILL it right there.
PAUSE_IN_COPY = """
import sys, time
import olivine.output as out
real = out._link_or_copy
def copy_then_pause(src, dst, copied):
    real(src, dst, copied)
    time.sleep(120)
out._link_or_copy = copy_then_pause
from olivine.cli import main
sys.exit(main(sys.argv[1:]))
"""
PAUSE_BETWEEN_RENAMES = """
import os, sys, time
real = os.rename
def rename_then_pause(src, dst):
    real(src, dst)
    if ".olivine-old-" in str(dst):
        time.sleep(120)
os.rename = rename_then_pause
from olivine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_six_runs_into_one_output_folder(tmp_path: Path, onnx_model: Path) -> None:
    config = write_workflow(tmp_path, onnx_model, {})
    procs = [start("run", "--config", str(config)) for _ in range(6)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    for code, err in results:
        assert "Traceback" not in err
        assert code == 0, err  # each waits for the one publishing, then replaces its output
    out = tmp_path / "out"
    assert foreign_files(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data", "run.json",
                                                     "summary.txt"]
    assert (out / "model.onnx.data").read_bytes() == (onnx_model / "model.onnx.data").read_bytes()
    assert leftovers(tmp_path) == []
    assert len(list((tmp_path / "cache" / "runs").glob("*/run.json"))) == 6


def test_a_run_killed_while_publishing_leaves_nothing_behind(tmp_path: Path, onnx_model: Path) -> None:
    config = write_workflow(tmp_path, onnx_model, {})
    failing = write_workflow(tmp_path, onnx_model, {"boom": {"type": "Fail", "message": "no"}},
                             name="fail.json")
    assert olivine("run", "--config", str(config)).returncode == 0
    out = tmp_path / "out"
    first = snapshot(out)
    (onnx_model / "model.onnx.data").write_bytes(b"\3" * 5120)

    # killed in the middle of the final copy: a half-filled staging folder stays behind
    proc = start("run", "--config", str(config), script=PAUSE_IN_COPY)
    wait_for(lambda: any(p.is_file() for s in tmp_path.glob(".out.olivine-staging-*") for p in s.iterdir()))
    kill(proc)
    assert len(leftovers(tmp_path)) == 1 and snapshot(out) == first
    # the next run clears it as soon as it starts, even though it then fails
    result = olivine("run", "--config", str(failing))
    assert result.returncode == 1 and "step 'boom' (pass Fail) failed" in result.stderr
    assert leftovers(tmp_path) == [] and snapshot(out) == first

    # killed between moving the old output aside and moving the new one in
    proc = start("run", "--config", str(config), script=PAUSE_BETWEEN_RENAMES)
    wait_for(lambda: list(tmp_path.glob(".out.olivine-old-*")))
    kill(proc)
    assert not out.exists() and len(leftovers(tmp_path)) == 2
    assert olivine("run", "--config", str(failing)).returncode == 1
    assert leftovers(tmp_path) == [] and snapshot(out) == first  # the old output is back
    assert olivine("run", "--config", str(config)).returncode == 0
    assert (out / "model.onnx.data").read_bytes() == b"\3" * 5120


def _can_mount_tmpfs(where: Path) -> str | None:
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs '{where}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine does not allow a tmpfs in a user namespace: {probe.stderr.strip()}"
    return None


def test_a_full_disk_while_publishing(tmp_path: Path, onnx_model: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    reason = _can_mount_tmpfs(disk)
    if reason:
        pytest.skip(reason)
    config = write_workflow(tmp_path, onnx_model, {}, output_dir=str(disk / "out"))
    # a 4 KiB tmpfs: model.onnx fits, model.onnx.data does not
    script = (f"mount -t tmpfs -o size=4k tmpfs '{disk}' && "
              f"'{sys.executable}' -m olivine run --config '{config}'; echo \"rc=$?\"; ls -A '{disk}'")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **ENV})
    assert "Traceback" not in result.stderr
    assert f"olivine: error: could not publish the output to '{disk / 'out'}': No space left on device" \
           in result.stderr
    assert "nothing was written there" in result.stderr
    lines = result.stdout.split()
    assert lines[0] == "rc=1"
    assert lines[1:] == [".out.olivine-lock"]  # no output folder, no staging folder
    [report_file] = (tmp_path / "cache" / "runs").glob("*/run.json")
    report = json.loads(report_file.read_text())
    assert report["status"] == "failed" and "No space left on device" in report["error"]["message"]
