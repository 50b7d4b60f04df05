"""Every hook has a documented section with its exact signature, and docs links resolve."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from olivine import hookspecs

REPO = Path(__file__).resolve().parents[2]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "olivine_spec")]


def test_there_are_hooks() -> None:
    assert {"register_passes", "register_evaluators", "register_systems", "run_started",
            "step_finished"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name: str) -> None:
    fn = getattr(hookspecs, name)
    params = ", ".join(inspect.signature(fn).parameters)
    text = (REPO / "docs" / "writing-plugins.md").read_text()
    assert f"\n### {name}({params})\n" in text
    assert fn.__doc__ and len(fn.__doc__.strip()) > 20


def test_relative_links_in_docs_resolve() -> None:
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
