"""The plugin API reference is generated from the docstrings and stays current."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current() -> None:
    gen = _script("gen_api_reference")
    text = gen.render()
    assert (REPO / "docs" / "api-reference.md").read_text() == text, \
        "docs/api-reference.md is out of date: run python scripts/gen_api_reference.py"
    for heading in ("### `olivine.Pass`", "### `olivine.PassContext`", "### `olivine.ModelHandle`",
                    "### `olivine.Evaluator`", "### `olivine.EvalContext`", "### `olivine.System`",
                    "### `olivine.option(", "### `olivine.testing.run_pass("):
        assert heading in text


def test_every_documented_method_has_a_docstring() -> None:
    import inspect

    import olivine

    for name in ("Pass", "PassContext", "ModelHandle", "Evaluator", "EvalContext", "System"):
        cls = getattr(olivine, name)
        assert (cls.__doc__ or "").strip(), name
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and inspect.isfunction(member):
                assert (member.__doc__ or "").strip(), f"{name}.{attr} has no docstring"


def test_providers_file_is_current() -> None:
    import pytest

    for plugin in (REPO / "plugins").iterdir():
        pytest.importorskip(plugin.name.replace("-", "_"), reason=f"{plugin.name} is not installed")
    gen = _script("gen_providers")
    assert gen.main(["--check"]) == 0, "run python scripts/gen_providers.py"
