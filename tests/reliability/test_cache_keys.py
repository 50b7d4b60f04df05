"""A step's cache key covers every file the step reads, and no absolute path.

Each test does what a user does: run a workflow, change one input file (same name) or
point a data config elsewhere, run again, and see the step run again with the new
content, never the old cached result. Moving the whole project folder is still a hit.
The ``ReadInputs`` pass below reads the kinds of inputs real passes read (a calibration
text file, a Python script, an adapter folder, a data config's files and user script)
and writes what it read beside the model, so a stale cache hit shows in the output.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

import olivine
from olivine import OnnxModel, Pass, PassContext
from olivine_testutil import HELLO_MODEL


@attrs.frozen
class ReadInputsConfig:
    """Options of ``ReadInputs``: every kind of input a real pass reads besides its model."""

    text_file: str | None = attrs.field(default=None, metadata={
        "input_path": True, "help": "a text file (like a calibration file)"})
    script: str | None = attrs.field(default=None, metadata={
        "input_path": True, "help": "a Python file defining value() (like model_script)"})
    folder: str | None = attrs.field(default=None, metadata={
        "input_path": True, "help": "a folder whose files are read (like an adapter folder)"})
    data_config: str | None = attrs.field(default=None, metadata={
        "data_config": True, "help": "a data config: its data_files and user_script are read"})
    extra: str | None = attrs.field(default=None, metadata={
        "help": "a file the pass opens without declaring it (as a user script may)"})


class ReadInputs(Pass):
    """Copy the model and write ``inputs.txt``: what it read from its files, in order."""

    name = "ReadInputs"
    Config = ReadInputsConfig
    libraries = ("onnx",)

    def run(self, model: Any, config: ReadInputsConfig, context: PassContext) -> OnnxModel:
        """Read every input the options name; record it beside the copied model."""
        from olivine.userscript import load_function, resolve_data_file

        seen: list[str] = []
        if config.text_file:
            seen.append(resolve_data_file(config.text_file).read_text())
        if config.script:
            seen.append(str(load_function(config.script, "value", "script", "value")()))
        if config.folder:
            folder = resolve_data_file(config.folder)
            seen += [f.read_text() for f in sorted(folder.rglob("*")) if f.is_file()]
        if config.data_config:
            dc = context.data_configs[config.data_config]
            files = dc.load_dataset_config.get("data_files") or []
            for name in [files] if isinstance(files, str) else files:
                seen.append(resolve_data_file(name, dc.script_dir).read_text())
            if dc.user_script:
                script = resolve_data_file(dc.user_script, dc.script_dir)
                seen.append(str(load_function(str(script), "value", "user_script", "value")()))
        if config.extra:
            seen.append(resolve_data_file(config.extra).read_text())
        for f in model.files():
            shutil.copy2(f, context.work_dir / f.name)
        (context.work_dir / "inputs.txt").write_text("|".join(s.strip() for s in seen))
        return OnnxModel(path=str(context.work_dir), onnx_file_name=model.model_file().name)


class _Plugin:
    """Registers ``ReadInputs`` in this process."""

    __name__ = "reliability-keys"

    @staticmethod
    @olivine.hookimpl
    def register_passes(register: Any) -> None:
        """Register the pass."""
        register(ReadInputs)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (model, inputs, workflow.json with relative paths), the working directory.

    The plugin host gets ``ReadInputs``; the cache is shared and lies outside the project.
    """
    from olivine import plugins

    monkeypatch.setattr(plugins, "_HOST", plugins.get_plugin_host(extra=[_Plugin()]))
    root = tmp_path / "project"
    shutil.copytree(HELLO_MODEL, root / "model")
    (root / "calib.txt").write_text("calibration one")
    (root / "other.txt").write_text("other data")
    (root / "loader.py").write_text("def value():\n    return 'script one'\n")
    (root / "data_script.py").write_text("def value():\n    return 'user script one'\n")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    (root / "adapter" / "weights.bin").write_text("weights one")
    monkeypatch.chdir(root)
    return root


def _workflow(root: Path, tmp_path: Path, **options: Any) -> Path:
    wf: dict[str, Any] = {
        "input_model": {"type": "ONNXModel", "model_path": "model"},
        "data_configs": [{"name": "calib", "user_script": "data_script.py",
                          "load_dataset_config": {"data_files": ["calib.txt"]}}],
        "passes": {"read": {"type": "ReadInputs", **options}},
        "output_dir": "out", "cache_dir": str(tmp_path / "shared-cache"),
        "log_severity_level": 3,
    }
    path = root / "workflow.json"
    path.write_text(json.dumps(wf, indent=2))
    return path


def _run(config: Path) -> tuple[str, str]:
    """Run ``config``; return the step's status (ran / cached) and what the output read."""
    result = olivine.run(config)
    assert result.output_dir is not None
    return result.report["steps"][0]["status"], (result.output_dir / "inputs.txt").read_text()


def test_changed_calibration_file_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, text_file="calib.txt")
    assert _run(config) == ("ran", "calibration one")
    assert _run(config) == ("cached", "calibration one")
    (project / "calib.txt").write_text("calibration two")
    assert _run(config) == ("ran", "calibration two")


def test_data_config_pointing_at_another_file_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, data_config="calib")
    assert _run(config) == ("ran", "calibration one|user script one")
    wf = json.loads(config.read_text())
    wf["data_configs"][0]["load_dataset_config"]["data_files"] = ["other.txt"]
    config.write_text(json.dumps(wf))
    assert _run(config) == ("ran", "other data|user script one")


def test_changed_data_file_of_a_data_config_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, data_config="calib")
    assert _run(config)[0] == "ran"
    (project / "calib.txt").write_text("calibration two")
    assert _run(config) == ("ran", "calibration two|user script one")


def test_edited_user_script_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, data_config="calib")
    assert _run(config)[0] == "ran"
    (project / "data_script.py").write_text("def value():\n    return 'user script two'\n")
    assert _run(config) == ("ran", "calibration one|user script two")


def test_edited_model_script_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, script="loader.py")
    assert _run(config) == ("ran", "script one")
    (project / "loader.py").write_text("def value():\n    return 'script two'\n")
    assert _run(config) == ("ran", "script two")


def test_changed_adapter_file_is_a_miss(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, folder="adapter")
    assert _run(config)[0] == "ran"
    (project / "adapter" / "weights.bin").write_text("weights two")
    assert _run(config) == ("ran", '{"r": 4}|weights two')


def test_declared_input_files_are_a_miss(project: Path, tmp_path: Path) -> None:
    """A file the pass opens on its own is seen only when the pass entry lists it."""
    config = _workflow(project, tmp_path, extra="other.txt")
    assert _run(config) == ("ran", "other data")
    (project / "other.txt").write_text("other data two")
    assert _run(config) == ("cached", "other data")  # undeclared: not seen (documented)
    wf = json.loads(config.read_text())
    wf["passes"]["read"]["input_files"] = ["other.txt"]
    config.write_text(json.dumps(wf))
    assert _run(config) == ("ran", "other data two")
    (project / "other.txt").write_text("other data three")
    assert _run(config) == ("ran", "other data three")


def test_missing_declared_input_file_is_a_config_error(project: Path, tmp_path: Path) -> None:
    config = _workflow(project, tmp_path, input_files=["nowhere.txt"])
    with pytest.raises(olivine.ConfigError, match=r"passes\.read\.input_files\[0\].*nowhere\.txt"):
        olivine.validate(config)


def _absolute_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _absolute_strings(k) + _absolute_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _absolute_strings(v)]
    return [value] if isinstance(value, str) and os.path.isabs(value) else []


def test_moved_project_folder_is_a_hit(project: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Same files elsewhere (another checkout, another machine): the shared cache hits."""
    config = _workflow(project, tmp_path, text_file="calib.txt", script="loader.py",
                       folder="adapter", data_config="calib", input_files=["other.txt"])
    first = olivine.run(config)
    assert first.report["steps"][0]["status"] == "ran"
    step_json = Path(first.report["steps"][0]["output_model"]["path"]).parent / "step.json"
    parts = json.loads(step_json.read_text())["key_parts"]
    assert _absolute_strings(parts) == []
    moved = tmp_path / "elsewhere" / "moved-project"
    shutil.copytree(project, moved)  # new paths, new inodes and mtimes, same content
    shutil.rmtree(moved / "out")
    monkeypatch.chdir(moved)
    again = olivine.run(moved / "workflow.json")
    assert again.report["steps"][0]["status"] == "cached"
    assert again.report["input_model"]["id"] == first.report["input_model"]["id"]
    assert again.report["steps"][0]["key"] == first.report["steps"][0]["key"]
    # run from another working directory, the config named by path: still a hit
    monkeypatch.chdir(tmp_path)
    assert olivine.run(moved / "workflow.json").report["steps"][0]["status"] == "cached"


# -- the real plugins declare the files their options name ---------------------------------

def _key(config: dict[str, Any], root: Path) -> str:
    from olivine.cache import Cache
    from olivine.engine import Engine
    from olivine.plugins import get_plugin_host

    wf = olivine.validate(config)
    engine = Engine(wf, get_plugin_host())
    cache = Cache(root / ".keys-cache")
    model_id = cache.model_identity(wf.input_model.handle)
    return cache.step_key(engine.key_parts(cache, wf.passes[0], model_id))


REAL_OPTIONS = [
    pytest.param("olivine_quantization", "onnx",
                 {"type": "OnnxStaticQuantization", "calibration_file": "calib.txt"},
                 "calib.txt", id="static-quantization-calibration_file"),
    pytest.param("olivine_weightquant", "onnx",
                 {"type": "OnnxGptqQuantization", "data_files": ["calib.txt"]},
                 "calib.txt", id="gptq-data_files"),
    pytest.param("olivine_transformers", "hf",
                 {"type": "OnnxConversion", "model_script": "loader.py", "model_loader": "value",
                  "io_config": {"input_names": ["x"]}},
                 "loader.py", id="conversion-model_script"),
    pytest.param("olivine_lora", "onnx",
                 {"type": "ExtractAdapters", "adapter_path": "adapter"},
                 "adapter/weights.bin", id="extract-adapters-adapter_path"),
]


@pytest.mark.parametrize(("module", "kind", "options", "edited"), REAL_OPTIONS)
def test_real_pass_options_naming_files_enter_the_key(
        module: str, kind: str, options: dict[str, Any], edited: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing the file a real pass option names changes the key; moving the project does not."""
    pytest.importorskip(module)
    root = tmp_path / "project"
    shutil.copytree(HELLO_MODEL, root / "onnx-model")
    hf = root / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    (root / "calib.txt").write_text("one two three")
    (root / "loader.py").write_text("def value(path):\n    return None\n")
    (root / "adapter").mkdir()
    (root / "adapter" / "weights.bin").write_text("one")
    model = {"type": "ONNXModel", "model_path": "onnx-model"} if kind == "onnx" \
        else {"type": "HfModel", "model_path": "hf-model"}
    config = {"input_model": model, "passes": {"p": options}}
    monkeypatch.chdir(root)
    try:
        before = _key(config, tmp_path)
    except olivine.ConfigError as exc:  # an option this machine's libraries cannot check
        pytest.skip(f"workflow not valid here: {exc}")
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    monkeypatch.chdir(moved)
    assert _key(config, tmp_path) == before
    with (moved / edited).open("a") as fh:
        fh.write(" changed")
    assert _key(config, tmp_path) != before


def test_every_real_option_naming_a_file_is_declared() -> None:
    """A pass option whose name says it is a path carries input_path or data_config metadata."""
    from olivine.plugins import get_plugin_host

    outputs = {"adapter_file_name", "external_data_name"}  # names of files the pass writes
    undeclared = []
    for name, cls, _ in get_plugin_host().passes.items():
        if not attrs.has(cls.Config):
            continue
        for field in attrs.fields(cls.Config):
            pathlike = "str" in str(field.type) and (
                field.name.endswith(("_file", "_files", "_path", "_dir", "_script"))
                or field.name in ("tokenizer", "user_script", "script_dir"))
            if pathlike and field.name not in outputs and not (
                    field.metadata.get("input_path") or field.metadata.get("data_config")):
                undeclared.append(f"{name}.{field.name}")
    assert undeclared == [], "declare these with metadata input_path (see olivine.inputs)"


def test_olivine_quantize_calibration_text_enters_the_key(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``olivine quantize --data_files`` writes absolute paths; the key holds content instead."""
    import argparse

    cli = pytest.importorskip("olivine_weightquant.cli")

    def key_in(root: Path) -> str:
        monkeypatch.chdir(root)
        parser = argparse.ArgumentParser()
        cli.configure(parser)
        args = parser.parse_args(["-m", "model/model.onnx", "--algorithm", "gptq",
                                  "--data_files", "calib.txt", "-o", "out"])
        return _key(cli.build_workflow(args), tmp_path)

    root = tmp_path / "project"
    shutil.copytree(HELLO_MODEL, root / "model")
    (root / "calib.txt").write_text("to be or not to be")
    try:
        before = key_in(root)
    except olivine.ConfigError as exc:
        pytest.skip(f"workflow not valid here: {exc}")
    shutil.copytree(root, tmp_path / "moved")
    assert key_in(tmp_path / "moved") == before
    (tmp_path / "moved" / "calib.txt").write_text("that is the question")
    assert key_in(tmp_path / "moved") != before
