"""Write Olive's pass names and each pass's option names to tests/recipes/olive_0_13_passes.json.

Run with the Python of a scratch environment that has Olive installed (never a
dependency of olivine):

    python -m venv /tmp/olive-venv && /tmp/olive-venv/bin/pip install olive-ai==0.13.0
    /tmp/olive-venv/bin/python scripts/olive_inventory.py

Passes whose module cannot be imported there (a vendor SDK is missing) are listed
with ``"options": null`` and the import error.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "recipes" / "olive_0_13_passes.json"


def inventory() -> dict[str, Any]:
    """``{"olive_version", "passes": {name: {"module", "options" | null, "error"?}}}``."""
    import olive
    from olive.hardware.accelerator import AcceleratorSpec, Device

    config = json.loads((Path(olive.__file__).parent / "olive_config.json").read_text())
    spec = AcceleratorSpec(accelerator_type=Device.CPU, execution_provider="CPUExecutionProvider")
    passes: dict[str, Any] = {}
    for name, entry in sorted(config["passes"].items()):
        module_path, _, cls_name = entry["module_path"].rpartition(".")
        row: dict[str, Any] = {"module": entry["module_path"]}
        try:
            cls = getattr(importlib.import_module(module_path), cls_name)
            row["options"] = sorted(cls._default_config(spec))  # Olive's own class method
        except Exception as exc:  # a missing vendor SDK: record it, keep going
            row["options"] = None
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        passes[name] = row
    version = getattr(olive, "__version__", "unknown")
    return {"about": f"Olive {version}'s passes and their option names, made by "
                     "scripts/olive_inventory.py run with Olive installed in a scratch venv "
                     "(/tmp/olive-venv/bin/python scripts/olive_inventory.py). Options of the "
                     "common pass config (e.g. save_as_external_data for ONNX passes) are included "
                     "where the pass adds them.",
            "olive_version": version, "passes": passes}


def main() -> int:
    """Write the inventory."""
    data = inventory()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    missing = [n for n, r in data["passes"].items() if r["options"] is None]
    print(f"wrote {OUT}: {len(data['passes'])} passes ({len(missing)} not importable: {missing})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
