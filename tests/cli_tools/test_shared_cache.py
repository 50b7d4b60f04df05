"""The shared step cache: two "machines" (two cache folders, two working directories, the
model copied into each) share steps through a shared folder and through S3 (a moto server on
127.0.0.1 started here); the second run computes nothing and writes byte-identical output.

Runs use the testkit's ``Scale`` pass (a real ONNX model in and out; ONNX Runtime runs the
result) and count its executions in ``runs_file``.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from olivine_testutil import HELLO_MODEL, executions, olivine_subprocess

PASSES = {"s1": {"type": "Scale", "factor": 2.0}, "s2": {"type": "Scale", "factor": 0.5, "note": "b"}}


def machine(root: Path, name: str, shared: Any) -> Path:
    """A working directory with its own copy of the model and a config of relative paths."""
    cwd = root / name
    shutil.copytree(HELLO_MODEL, cwd / "model")
    config = {"input_model": {"type": "ONNXModel", "model_path": "model"}, "passes": PASSES,
              "output_dir": "out", "cache_dir": "cache", "log_severity_level": 3,
              "shared_cache": shared}
    (cwd / "workflow.json").write_text(json.dumps(config))
    return cwd


def outputs(folder: Path) -> dict[str, bytes]:
    """The model files of an output folder (run records differ by design: times, run ids)."""
    return {f.name: f.read_bytes() for f in sorted(folder.glob("model.onnx*"))}


def run_in(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import olivine

    monkeypatch.chdir(cwd)
    return olivine.run(str(cwd / "workflow.json"))


def ort_output(folder: Path) -> Any:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in sess.get_inputs()}
    return sess.run(None, feed)[0]


def test_shared_folder_two_machines(tmp_path: Path, runs_file: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    shared = tmp_path / "team-cache"
    a = machine(tmp_path, "machine-a", str(shared))
    b = machine(tmp_path, "elsewhere/machine-b", str(shared))
    first = run_in(a, monkeypatch)
    assert executions(runs_file) == ["Scale s1", "Scale s2"]
    assert [s.get("shared_cache") for s in first.report["steps"]] == ["uploaded", "uploaded"]
    keys = [s["key"] for s in first.report["steps"]]
    assert sorted(p.name for p in (shared / "steps").iterdir()) == sorted(keys)
    # keys hold no absolute path: nothing of either machine's folders is in a stored record
    for key in keys:
        assert str(tmp_path) not in (shared / "steps" / key / "step.json").read_text()

    second = run_in(b, monkeypatch)
    assert executions(runs_file) == ["Scale s1", "Scale s2"]  # nothing computed on machine B
    assert [s["status"] for s in second.report["steps"]] == ["cached", "cached"]
    assert [s.get("shared_cache") for s in second.report["steps"]] == ["hit", "hit"]
    assert [s["key"] for s in second.report["steps"]] == keys
    assert outputs(b / "out") == outputs(a / "out") and outputs(a / "out")
    # the entries entered B's own cache: a third run there needs no shared cache at all
    assert all((b / "cache" / "steps" / k / "step.json").is_file() for k in keys)
    np.testing.assert_array_equal(ort_output(b / "out"), ort_output(a / "out"))


def test_damaged_and_hostile_entries_are_computed(tmp_path: Path, runs_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from olivine.cache import record_checksum

    shared = tmp_path / "team-cache"
    a = machine(tmp_path, "a", {"path": str(shared)})
    keys = [s["key"] for s in run_in(a, monkeypatch).report["steps"]]
    # entry 1: a stored file changed after upload; entry 2: a record (with a valid checksum)
    # naming a file outside the step folder
    data = next((shared / "steps" / keys[0] / "output").glob("model.onnx.data"))
    data.write_bytes(data.read_bytes()[:-4] + b"\1\2\3\4")
    record_file = shared / "steps" / keys[1] / "step.json"
    record = json.loads(record_file.read_text())
    record["files"]["../../../../evil.txt"] = {"size": 4, "sha256": "0" * 64}
    record["record_sha256"] = record_checksum(record)
    record_file.write_text(json.dumps(record))
    (shared / "evil.txt").write_text("evil")

    b = machine(tmp_path, "b", {"path": str(shared)})
    second = run_in(b, monkeypatch)
    assert executions(runs_file) == ["Scale s1", "Scale s2"] * 2  # both computed again
    # found damaged, computed, and the damaged entries replaced by sound ones
    assert [s.get("shared_cache") for s in second.report["steps"]] == ["uploaded", "uploaded"]
    c = machine(tmp_path, "c", {"path": str(shared)})
    assert [s.get("shared_cache") for s in run_in(c, monkeypatch).report["steps"]] == ["hit", "hit"]
    assert len(executions(runs_file)) == 4
    assert outputs(c / "out") == outputs(a / "out")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("evil.txt")] == [
        "team-cache/evil.txt"]  # only the planted one
    assert outputs(b / "out") == outputs(a / "out")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A moto S3 server on 127.0.0.1 (a thread of this process: it ends with the test) and a
    bucket in it; yields the storage options that reach it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("team-bucket")
    try:
        yield options
    finally:
        server.stop()


def test_s3_two_machines_and_the_command(tmp_path: Path, runs_file: Path, s3: dict[str, Any],
                                        cli: Any) -> None:
    """Each machine is its own process (as two computers would be), the cache on S3; the
    command runs in this process."""
    import s3fs

    shared = {"path": "s3://team-bucket/olivine", "storage_options": s3}
    a = machine(tmp_path, "a", shared)
    b = machine(tmp_path, "b", shared)
    env = {"OLIVINE_TESTKIT_RUNS": str(runs_file)}
    done = olivine_subprocess("run", "--config", "workflow.json", cwd=a, env=env)
    assert done.returncode == 0, done.stderr
    assert executions(runs_file) == ["Scale s1", "Scale s2"]
    done = olivine_subprocess("run", "--config", "workflow.json", cwd=b, env=env)
    assert done.returncode == 0, done.stderr
    assert executions(runs_file) == ["Scale s1", "Scale s2"]  # B computed nothing
    report = json.loads((b / "out" / "run.json").read_text())
    assert [s.get("shared_cache") for s in report["steps"]] == ["hit", "hit"]
    assert outputs(b / "out") == outputs(a / "out")

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    fs.pipe_file("team-bucket/olivine/steps/README", b"not olivine's")  # a foreign object
    flags = ["--path", "s3://team-bucket/olivine"] + [
        f"--storage_option={k}={v}" for k, v in s3.items()]
    code, out, err = cli("shared-cache", *flags, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["key"] for r in rows) == sorted(s["key"] for s in report["steps"])
    one = rows[0]["key"]
    code, out, err = cli("shared-cache", *flags, "--delete", "--model_hash", one[:12])
    assert code == 0 and "deleted 1 entries" in out, err
    code, out, err = cli("shared-cache", *flags, "--delete", "--all", "--dry_run")
    assert code == 0 and "1 entries would be deleted" in out, err
    code, out, err = cli("shared-cache", *flags, "--delete", "--all", "-y")
    assert code == 0 and "deleted 1 entries" in out, err
    fs.invalidate_cache()
    assert fs.cat_file("team-bucket/olivine/steps/README") == b"not olivine's"
    assert not [p for p in fs.find("team-bucket/olivine/steps") if p.endswith("step.json")]


def test_command_and_config_errors(tmp_path: Path, cli: Any, write_config: Any) -> None:
    code, _, err = cli("shared-cache", "--path", str(tmp_path), "--delete")
    assert code == 2 and "--delete" in err and "--all" in err
    code, _, err = cli("shared-cache", "--account", "acct")
    assert code == 2 and "--container" in err
    code, _, err = cli("shared-cache", "--path", str(tmp_path), "--all")
    assert code == 2 and "--all: only with --delete" in err
    code, _, err = cli("shared-cache", "--path", str(tmp_path), "--delete", "--model_hash", "xyz")
    assert code == 2 and "--model_hash" in err
    code, out, _ = cli("shared-cache", "--path", str(tmp_path))
    assert code == 0 and "0 steps" in out
    # Olive's cache_config names an Azure container: it maps onto the shared cache (adlfs is
    # not installed here, so the run stops before any step with a message naming the package)
    config = {"input_model": {"type": "ONNXModel", "model_path": str(HELLO_MODEL)},
              "passes": {"s1": {"type": "Scale"}}, "output_dir": str(tmp_path / "out"),
              "cache_config": {"cache_dir": str(tmp_path / "c"), "account_name": "acct",
                               "container_name": "box"}}
    try:
        import adlfs  # noqa: F401
    except ImportError:
        code, _, err = cli("run", "--config", str(write_config(config)))
        assert code == 2 and "adlfs" in err and "Traceback" not in err
    config["shared_cache"] = str(tmp_path / "s")
    code, _, err = cli("run", "--config", str(write_config(config)))
    assert code == 2 and "keep one" in err
    plain = {k: v for k, v in config.items() if k != "cache_config"}
    plain["shared_cache"] = {"path": str(tmp_path / "s"), "update_shared_cache": False}
    code, out, err = cli("run", "--config", str(write_config(plain)), "--dry-run")
    assert code == 0 and f"shared cache: {tmp_path / 's'} (download only)" in out, err
    del config["cache_config"]
    config["shared_cache"] = {"path": str(tmp_path / "s"), "bogus": 1}
    code, _, err = cli("run", "--config", str(write_config(config)))
    assert code == 2 and "shared_cache.bogus" in err
