"""The JSON configs of the user's guide (../shared/seed/olive-guide.de.md) work as written."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

import olivine
from olivine.config.loader import parse_text
from olivine_testutil import HELLO_MODEL, SHARED

GUIDE = SHARED / "seed" / "olive-guide.de.md"


def guide_blocks() -> list[Any]:
    """Every ```json block of the guide, parsed the way `olivine run` parses files."""
    text = GUIDE.read_text(encoding="utf-8")
    return [parse_text(block, "guide") for block in re.findall(r"```json\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def blocks() -> list[Any]:
    if not GUIDE.exists():
        pytest.fail(f"the user's guide is missing at {GUIDE}")
    found = guide_blocks()
    assert len(found) == 4, "the guide's JSON examples changed; update these tests"
    return found


def test_guide_has_the_expected_examples(blocks: list[Any]) -> None:
    full, recipe, systems, passes = blocks
    assert full["input_model"]["type"] == "PyTorchModel"
    assert recipe["input_model"]["config"]["hf_config"]["trust_remote_code"] is True
    assert systems["systems"]["gpu_system"]["config"]["accelerators"][0]["device"] == "gpu"
    assert passes["passes"]["convert"]["config"]["precision"] == "int8"  # the // comment is gone


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
