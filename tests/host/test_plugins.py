"""Plugin discovery through real entry points, allow/block lists, clashes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import olivine
from olivine_testutil import olivine_subprocess


def _plugins(env: dict[str, str] | None = None) -> list[dict[str, object]]:
    proc = olivine_subprocess("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_installed_plugins_are_discovered_through_entry_points() -> None:
    rows = {r["name"]: r for r in _plugins()}
    assert rows["example"]["distribution"] == "olivine-example"
    assert rows["example"]["passes"] == ["OnnxMetadata"]
    assert "register_passes" in rows["example"]["hooks"]
    assert rows["olivine-systems"]["builtin"] is True
    assert rows["olivine-systems"]["systems"] == ["LocalSystem", "PythonEnvironment"]
    assert rows["testkit"]["metric_types"] == ["weight_stats"]


def test_allow_list_loads_only_named_plugins_plus_builtins() -> None:
    names = {r["name"] for r in _plugins({"OLIVINE_LOAD_PLUGINS": "olivine-example"})}
    assert names == {"example", "olivine-systems", "olivine-progress", "olivine-models"}
    names = {r["name"] for r in _plugins({"OLIVINE_LOAD_PLUGINS": ""})}
    assert names == {"olivine-systems", "olivine-progress", "olivine-models"}


def test_block_list_skips_plugins() -> None:
    names = {r["name"] for r in _plugins({"OLIVINE_DISABLE_PLUGINS": "example,olivine-progress"})}
    assert "example" not in names and "olivine-progress" not in names
    assert "testkit" in names


def test_unknown_name_in_lists_is_an_error() -> None:
    proc = olivine_subprocess("plugins", env={"OLIVINE_LOAD_PLUGINS": "exmaple"})
    assert proc.returncode == 2
    assert "OLIVINE_LOAD_PLUGINS names 'exmaple', which is not an installed olivine plugin " \
           "(did you mean 'example'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def _fake_distribution(root: Path, dist: str, module: str, source: str) -> dict[str, str]:
    """Install a plugin for real as far as importlib.metadata sees: a dist-info on PYTHONPATH."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[olivine]\n{dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": str(root)}


def test_two_plugins_registering_one_name_is_an_error_naming_both(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "olivine-clash", "olivine_clash", """
        import olivine
        from olivine import Pass

        class Other(Pass):
            name = "OnnxMetadata"

        @olivine.hookimpl
        def register_passes(register):
            register(Other)
    """)
    proc = olivine_subprocess("passes", env=env)
    assert proc.returncode == 2
    assert ("pass type name 'OnnxMetadata' is registered twice: by plugin 'olivine-clash' "
            "(olivine_clash.Other) and by plugin 'example' (olivine_example.OnnxMetadata); "
            "uninstall one, or disable one with OLIVINE_DISABLE_PLUGINS=olivine-clash or "
            "OLIVINE_DISABLE_PLUGINS=example") in proc.stderr
    proc = olivine_subprocess("passes", env={**env, "OLIVINE_DISABLE_PLUGINS": "olivine-clash"})
    assert proc.returncode == 0, proc.stderr


def test_plugin_with_unknown_hook_fails_check_pending(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "olivine-typo", "olivine_typo", """
        import olivine

        @olivine.hookimpl
        def register_pases(register):
            pass
    """)
    proc = olivine_subprocess("plugins", env=env)
    assert proc.returncode == 2
    assert "plugin 'olivine-typo' implements a hook olivine does not have" in proc.stderr
    assert "register_pases" in proc.stderr


def test_plugin_that_fails_to_import_names_itself(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "olivine-broken", "olivine_broken", """
        raise ImportError("needs libfoo")
    """)
    proc = olivine_subprocess("plugins", env=env)
    assert proc.returncode == 2
    assert "plugin 'olivine-broken' (distribution olivine-broken) failed to load: ImportError: " \
           "needs libfoo; disable it with OLIVINE_DISABLE_PLUGINS=olivine-broken" in proc.stderr


def test_help_does_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom olivine.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'transformers', 'onnx', "
            "'onnxruntime_genai', 'numpy') if m in sys.modules]\nprint('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout


def test_plugin_for_another_api_is_skipped_with_a_clear_message(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "olivine-future", "olivine_future", """
        import olivine
        from olivine import Pass

        olivine_api = ">=2,<3"

        class Future(Pass):
            name = "FuturePass"

        @olivine.hookimpl
        def register_passes(register):
            register(Future)
    """)
    proc = olivine_subprocess("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "example" in {r["name"] for r in json.loads(proc.stdout)}
    assert "olivine-future" not in {r["name"] for r in json.loads(proc.stdout)}
    assert ("plugin 'olivine-future' (olivine-future 1.0) is not loaded: it supports olivine API "
            f">=2,<3, and this olivine offers API {olivine.API_VERSION}; install a version of "
            "olivine-future made for this olivine, or disable it with "
            "OLIVINE_DISABLE_PLUGINS=olivine-future") in proc.stderr
    config = tmp_path / "wf.json"
    config.write_text(json.dumps({"input_model": {"type": "ONNXModel", "model_path": str(tmp_path)},
                                  "passes": {"p": {"type": "FuturePass"}}}))
    proc = olivine_subprocess("run", "--config", str(config), "--dry-run", env=env)
    assert proc.returncode == 2
    assert "unknown pass type 'FuturePass'" in proc.stderr
    assert "not loaded because they do not support this olivine's API: olivine-future " \
           "(olivine-future 1.0)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugin_with_an_unreadable_api_range_is_skipped(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "olivine-odd", "olivine_odd", """
        olivine_api = "one or two"
    """)
    proc = olivine_subprocess("plugins", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'olivine-odd' (olivine-odd 1.0) is not loaded: its olivine_api 'one or two' " \
           "cannot be read: 'one or two' starts with none of >=, <=, ==, !=, >, <" in proc.stderr
