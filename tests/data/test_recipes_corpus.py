"""The corpus (``../shared/olive-recipes``): every PyTorchModel input and data config validates.

No model is loaded and no user script runs here: this checks that olivine knows every
option the recipes write, and that the only data components it lacks are the ones
``docs/compat/data.yaml`` lists as not supported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olivine.config.inputmodel import input_model
from olivine.config.sections import DataConfig
from olivine.config.typed import Problems, structure
from olivine.data import validate
from olivine_testutil import SHARED

RECIPES = SHARED / "olive-recipes"
pytestmark = pytest.mark.skipif(not RECIPES.is_dir(), reason="../shared/olive-recipes is absent")

#: components docs/compat/data.yaml lists as not supported (WER and vision-QA evaluations)
NOT_SUPPORTED = {"speech_transcription_pre_process", "vision_vqa_pre_process",
                 "vision_vqa_dataloader"}


def _workflows() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(RECIPES.glob("**/*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("input_model"), dict):
            out.append((path, doc))
    return out


def test_every_pytorch_model_input_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for path, doc in _workflows():
        model = doc["input_model"]
        if str(model.get("type", "")).lower() != "pytorchmodel":
            continue
        script = model.get("model_script") or (model.get("config") or {}).get("model_script")
        # recipes are run from their own folder or the folder above it
        roots = [r for r in (path.parent, path.parent.parent) if script and (r / script).is_file()]
        if not roots:
            continue  # the corpus lacks this recipe's script (not portable)
        monkeypatch.chdir(roots[0])
        problems = Problems()
        found = input_model(model, path.parent, problems)
        assert not problems.items, f"{path.relative_to(RECIPES)}: {problems.items}"
        assert found is not None and found.handle.kind == "pytorch"
        checked += 1
    assert checked >= 10


def test_every_data_config_validates_but_the_documented_gaps() -> None:
    missing: set[str] = set()
    checked = 0
    for path, doc in _workflows():
        for entry in doc.get("data_configs") or []:
            problems = Problems()
            dc = structure(entry, DataConfig, "dc", problems)
            assert not problems.items, f"{path.relative_to(RECIPES)}: {problems.items}"
            for problem in validate(dc):
                assert "unknown" in problem and "component" in problem, \
                    f"{path.relative_to(RECIPES)}: {problem}"
                missing.add(problem.split("component '")[1].split("'")[0])
            checked += 1
    assert checked >= 80
    assert missing <= NOT_SUPPORTED, missing - NOT_SUPPORTED
