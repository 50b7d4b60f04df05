"""docs/olive-compatibility.md: its data names only Olive's passes and options, and it is current."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

import pytest

from olivine_testutil import REPO

INVENTORY = REPO / "tests" / "recipes" / "olive_0_13_passes.json"


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_compat", REPO / "scripts" / "gen_compat.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_compat", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def areas() -> dict[str, Any]:
    """Every docs/compat/*.yaml."""
    pytest.importorskip("yaml")
    return dict(_gen().load_areas())


def test_every_pass_and_option_is_olives(areas: dict[str, Any]) -> None:
    olive = json.loads(INVENTORY.read_text(encoding="utf-8"))["passes"]
    wrong = []
    for stem, data in areas.items():
        for name, row in (data.get("passes") or {}).items():
            where = f"{stem}.yaml: {name}"
            if row.get("status") not in ("supported", "partly", "not"):
                wrong.append(f"{where}: status {row.get('status')!r}")
            if name not in olive:
                if not row.get("newer_than"):
                    wrong.append(f"{where}: not an Olive 0.13 pass (mark newer_than if the recipes "
                                 "use it from a later Olive)")
                continue
            known = olive[name]["options"] or []
            for option, value in (row.get("options") or {}).items():
                status = value if isinstance(value, str) else value.get("status")
                if status not in ("supported", "partly", "not"):
                    wrong.append(f"{where}.{option}: status {status!r}")
                newer = isinstance(value, dict) and value.get("newer_than")
                if option not in known and not newer:
                    wrong.append(f"{where}.{option}: not an option of Olive 0.13's {name}")
            if row.get("status") in ("supported", "partly") and row.get("options") is not None:
                missing = sorted(set(known) - set(row["options"]))
                if missing:
                    wrong.append(f"{where}: Olive options without a row: {missing}")
    assert not wrong, "\n".join(wrong)


def test_generated_document_is_current(areas: dict[str, Any]) -> None:
    gen = _gen()
    assert gen.DOC.read_text(encoding="utf-8") == gen.render(areas), \
        "docs/olive-compatibility.md is out of date: run python scripts/gen_compat.py"
