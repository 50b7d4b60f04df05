"""Olive's fine-tuning recipes (Llama-3.2-1B-Instruct: dora, loha, lokr, qlora): every step of
olivine-lora in them validates as written; what is left is other plugins' (see the README)."""

from __future__ import annotations

import json

import pytest

from olivine_testutil import SHARED

FOLDER = SHARED / "olive-recipes" / "meta-llama-Llama-3.2-1B-Instruct" / "olive"


@pytest.mark.parametrize(("recipe", "ours"), [
    ("dora.json", {"d": "DoRA", "e": "ExtractAdapters"}),
    ("loha.json", {"l": "LoHa", "e": "ExtractAdapters"}),
    ("lokr.json", {"l": "LoKr"}),
    ("qlora.json", {"q": "QLoRA"}),
])
def test_recipe_steps_of_this_plugin_validate(recipe: str, ours: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if not (FOLDER / recipe).is_file():
        pytest.skip(f"no olive-recipes checkout at {FOLDER}")
    import olivine
    from olivine import ConfigError, get_plugin_host

    raw = json.loads((FOLDER / recipe).read_text())
    monkeypatch.chdir(FOLDER)
    host = get_plugin_host()
    for step, name in ours.items():  # the recipes' lowercase names resolve to these passes
        assert host.passes.get(raw["passes"][step]["type"]).name == name
    try:
        olivine.validate(raw)
        problems: list[str] = []
    except ConfigError as exc:
        problems = exc.problems
    mine = [p for p in problems if any(p.startswith(f"passes.{s}.") or p.startswith(f"passes.{s}:")
                                       for s in ours)]
    assert not mine, mine
