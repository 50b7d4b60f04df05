"""The user's guide to Olive (a German document, kept beside the project as
``../shared/seed/olive-guide.de.md``) works as written: its JSON configs and its commands.

The guide's examples are test data in ``data/olive_guide/`` (see the README there), so
these tests need nothing outside the repository; when the guide itself is beside the
project, one test checks that the copies still match it.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import olivine
from olivine.config.loader import parse_text
from olivine_testutil import HELLO_MODEL, SHARED

DATA = Path(__file__).resolve().parent / "data" / "olive_guide"
GUIDE = SHARED / "seed" / "olive-guide.de.md"
#: the guide's ```json blocks in the order it shows them
BLOCK_FILES = ("workflow_config.json", "recipe_phi4_mini.json", "fragment_systems_gpu.json",
               "fragment_passes_int8.jsonc")


def guide_commands() -> list[str]:
    """The guide's ``olive ...`` command lines (continuations joined), from the copy."""
    return [line for line in (DATA / "commands.txt").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def blocks() -> list[Any]:
    """The guide's JSON examples, parsed the way `olivine run` parses files."""
    return [parse_text((DATA / name).read_text(encoding="utf-8"), name) for name in BLOCK_FILES]


def test_copies_match_the_guide() -> None:
    """The test data is the guide's text, block for block (when the guide is beside the project)."""
    if not GUIDE.is_file():
        pytest.skip(f"the user's guide is not beside this clone ({GUIDE}); the copies in {DATA} are used")
    text = GUIDE.read_text(encoding="utf-8")
    json_blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert len(json_blocks) == len(BLOCK_FILES), "the guide's JSON examples changed; update data/olive_guide"
    for name, block in zip(BLOCK_FILES, json_blocks):
        assert (DATA / name).read_text(encoding="utf-8") == block, name
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line.startswith("olive ") and line != "olive --help":
                commands.append(line)
    assert commands == guide_commands()


def test_guide_has_the_expected_examples(blocks: list[Any]) -> None:
    full, recipe, systems, passes = blocks
    assert full["input_model"]["type"] == "PyTorchModel"
    assert recipe["input_model"]["config"]["hf_config"]["trust_remote_code"] is True
    assert systems["systems"]["gpu_system"]["config"]["accelerators"][0]["device"] == "gpu"
    assert passes["passes"]["convert"]["config"]["precision"] == "int8"  # the // comment is gone


@pytest.mark.parametrize("command", [c for c in guide_commands() if not c.startswith("olive run ")])
def test_guide_commands_parse_and_plan_offline(command: str, cli: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `olive auto-opt` / `olive finetune` line of the guide, typed as `olivine`, plans a workflow.

    The hub ids stay as written: a dry run must not need the hub.
    """
    argv = shlex.split(command)
    assert argv[0] == "olive"
    if argv[1] == "finetune":
        pytest.importorskip("olivine_lora", reason="olivine-lora (finetune) is not installed")
    else:
        pytest.importorskip("olivine_modelbuilder", reason="olivine-modelbuilder (auto-opt) is not installed")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*argv[1:], "--dry_run")
    assert code == 0, err
    assert '"output_dir"' in out and not any(tmp_path.iterdir())  # planned, nothing written


def _to_current_form(old: dict[str, Any]) -> dict[str, Any]:
    """The same workflow written in Olive's current form, by hand."""
    hf = old["input_model"]["config"]["hf_config"]
    new: dict[str, Any] = {
        "input_model": {"type": "HfModel", "model_path": hf["model_name"], "task": hf["task"]},
        "systems": {n: {"type": s["type"], **s["config"]} for n, s in old["systems"].items()},
        "passes": {n: {"type": p["type"], **p.get("config", {})} for n, p in old["passes"].items()},
    }
    if "trust_remote_code" in hf:
        new["input_model"]["load_kwargs"] = {"trust_remote_code": hf["trust_remote_code"]}
    if "evaluators" in old:
        new["evaluators"] = old["evaluators"]
    engine = copy.deepcopy(old.get("engine", {}))
    strategy = engine.get("search_strategy")
    if strategy:
        strategy["sampler"] = strategy.pop("search_algorithm")
    new.update(engine)  # engine keys at the top level
    return new


def _with_testkit_passes(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg["input_model"] = {"type": "ONNXModel", "model_path": str(HELLO_MODEL)}
    cfg["passes"] = {n: {"type": "Scale"} for n in cfg["passes"]}
    cfg.pop("evaluators", None)
    if "engine" in cfg:
        cfg["engine"].pop("evaluator", None)
    cfg.pop("evaluator", None)
    return cfg


def test_old_and_current_forms_mean_the_same(blocks: list[Any]) -> None:
    for old in blocks[:2]:
        new = _to_current_form(old)
        a = olivine.validate(_with_testkit_passes(old)).to_dict()
        b = olivine.validate(_with_testkit_passes(new)).to_dict()
        assert a == b
    # the input models too (a hub id; nothing is fetched while validating)
    old_model = {"input_model": blocks[1]["input_model"]}
    new_model = {"input_model": _to_current_form(blocks[1])["input_model"]}
    a = olivine.validate(old_model).input_model
    b = olivine.validate(new_model).input_model
    assert a == b and a.is_hub_id and a.handle.load_options() == {"trust_remote_code": True}


def _validates(cfg: dict[str, Any], tmp_path: Path, cli: Any) -> str:
    path = tmp_path / "guide.json"
    path.write_text(json.dumps(cfg))
    code, out, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 0, err
    return out


def test_guide_configs_validate_as_written(blocks: list[Any], tmp_path: Path, cli: Any) -> None:
    for plugin in ("olivine_modelbuilder", "olivine_transformers", "olivine_evaluators"):
        pytest.importorskip(plugin, reason="the guide's configs use its passes and metrics")
    full, recipe, systems, passes = blocks
    out = _validates(full, tmp_path, cli)
    assert "1. conversion: ModelBuilder" in out and "2. optimization: OrtTransformersOptimization" in out
    assert "evaluator common_evaluator: latency (latency)" in out
    out = _validates(recipe, tmp_path, cli)
    assert "input model: HfModel microsoft/Phi-4-mini-instruct (hub id)" in out
    # the guide's fragments, applied to the recipe as the guide says
    gpu = {**recipe, **systems}
    out = _validates(gpu, tmp_path, cli)
    assert "target: gpu / CUDAExecutionProvider" in out
    out = _validates({**recipe, **passes}, tmp_path, cli)
    assert "precision = \"int8\"" in out
