"""Issue 12, item 7: bad input never ends in a Python traceback.

Each test does what a user did and checks what a user sees: the exit code, one
message naming the bad key or file, no traceback, nothing written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from olivine.testing import make_workflow
from olivine_testutil import HELLO_MODEL, olivine_subprocess

LONG = "x" * 300  # one file or folder name over the 255 bytes every file system allows


def _write(tmp_path: Path, wf: dict[str, object], name: str = "wf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(wf))
    return path


def _refused(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> None:
    """The run exited with ``code``, named every needle and showed no traceback."""
    assert proc.returncode == code, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_a_deeply_nested_config_is_refused_with_its_line(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}})
    text = json.dumps(wf)[:-1] + ', "workflow_id": ' + "[" * 3000 + "]" * 3000 + "}"
    config = tmp_path / "deep.json"
    config.write_text(text)
    _refused(olivine_subprocess("run", "--config", str(config)), "deep.json", "nested deeper than 64",
             "line 1")
    yaml_config = tmp_path / "deep.yaml"
    yaml_config.write_text("workflow_id: " + "[" * 3000 + "]" * 3000 + "\n")
    _refused(olivine_subprocess("run", "--config", str(yaml_config)), "deep.yaml", "nested")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_dict_in_a_search_list_names_the_value(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale", "factor": [2.0, {"a": 1}]}},
                       search_strategy={"sampler": "sequential"},
                       evaluators={"e": {"metrics": [{"name": "w", "type": "weight_stats",
                                                      "sub_types": [{"name": "abs_sum"}]}]}},
                       evaluator="e")
    proc = olivine_subprocess("run", "--config", str(_write(tmp_path, wf)))
    _refused(proc, "passes.s.factor[1]", "objects cannot be searched")


@pytest.mark.parametrize("where", ["config", "output_dir", "cache_dir", "model_path"])
def test_a_name_over_255_bytes_is_a_config_error(tmp_path: Path, where: str) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}})
    config = _write(tmp_path, wf)
    args = ["run", "--config", str(config)]
    key = where
    if where == "config":
        args[2], key = str(tmp_path / f"{LONG}.json"), "config file"
    elif where == "model_path":
        wf["input_model"]["model_path"] = str(tmp_path / LONG / "model.onnx")
        _write(tmp_path, wf)  # the same wf.json
        key = "input_model.model_path"
    else:
        args += [{"output_dir": "-o", "cache_dir": "--cache_dir"}[where], str(tmp_path / LONG)]
    _refused(olivine_subprocess(*args), key, "longer than 255 bytes")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_cache_ls_with_a_name_over_255_bytes(tmp_path: Path) -> None:
    _refused(olivine_subprocess("cache", "ls", "--cache_dir", str(tmp_path / LONG)), "--cache_dir",
             "longer than 255 bytes")


@pytest.mark.parametrize("key", ["output_dir", "cache_dir"])
def test_an_empty_output_or_cache_folder_is_refused(tmp_path: Path, key: str) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}}, **{key: ""})
    proc = olivine_subprocess("run", "--config", str(_write(tmp_path, wf)), cwd=tmp_path)
    _refused(proc, f"{key}: must name a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf.json"]


@pytest.mark.parametrize("flag", ["-o", "--cache_dir"])
def test_an_output_or_cache_folder_below_a_file_is_refused(tmp_path: Path, flag: str) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}})
    (tmp_path / "notes.txt").write_text("mine")
    proc = olivine_subprocess("run", "--config", str(_write(tmp_path, wf)), flag,
                              str(tmp_path / "notes.txt" / "sub"))
    _refused(proc, "output_dir" if flag == "-o" else "cache_dir", "notes.txt' is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_benchmark_on_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"this is not a protobuf\n" * 10)
    _refused(olivine_subprocess("benchmark", "-m", str(garbage), "--runs", "1", "--warmup", "0"),
             "--model", "model.onnx", "ONNX Runtime cannot load")


def test_disabling_the_builtin_systems_is_a_config_error(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}})
    proc = olivine_subprocess("run", "--config", str(_write(tmp_path, wf)), "--dry-run",
                              env={"OLIVINE_DISABLE_PLUGINS": "olivine-systems"})
    _refused(proc, "systems:", "LocalSystem is not loaded", "OLIVINE_DISABLE_PLUGINS")


def test_cache_dir_flag_wins_over_the_environment(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path, HELLO_MODEL, {"s": {"type": "Scale"}})
    del wf["cache_dir"]
    config = _write(tmp_path, wf)
    env = {"OLIVINE_CACHE_DIR": str(tmp_path / "env-cache")}
    flag = tmp_path / "flag-cache"
    dry = olivine_subprocess("run", "--config", str(config), "--cache_dir", str(flag), "--dry-run",
                             env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"cache: {flag}" in dry.stdout
    run = olivine_subprocess("run", "--config", str(config), "--cache_dir", str(flag), env=env)
    assert run.returncode == 0, run.stderr
    assert (flag / "steps").is_dir() and not (tmp_path / "env-cache").exists()
    # with neither the flag nor the key, the environment is the default
    dry = olivine_subprocess("run", "--config", str(config), "--dry-run", env=env)
    assert f"cache: {tmp_path / 'env-cache'}" in dry.stdout, dry.stdout
    # the key in the config wins over the environment too
    config = _write(tmp_path, {**wf, "cache_dir": str(tmp_path / "key-cache")})
    dry = olivine_subprocess("run", "--config", str(config), "--dry-run", env=env)
    assert f"cache: {tmp_path / 'key-cache'}" in dry.stdout, dry.stdout


BOOM = """
import sys
import olivine.cli.commands as commands

def boom(args):
    raise {exc}

commands.cmd_plugins = boom
from olivine.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("exc, says", [
    ("RuntimeError('kaput\\nsecond line')", "internal error: `olivine plugins` failed with "
                                              "RuntimeError: kaput second line at "),
    ("OSError(28, 'No space left on device')", "error: `olivine plugins` failed: OSError: "),
])
def test_an_unexpected_exception_is_one_line_and_log_level_0_shows_it(tmp_path: Path, exc: str,
                                                                      says: str) -> None:
    script = tmp_path / "boom.py"
    script.write_text(BOOM.format(exc=exc))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), "plugins", *args], capture_output=True,
                              text=True, timeout=60)

    proc = run()
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert says in lines[0] and "boom.py:" in lines[0] and "--log_level 0" in lines[0], lines[0]
    verbose = run("--log_level", "0")
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "in boom" in verbose.stderr
