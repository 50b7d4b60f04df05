"""The builder is imported without the modeling code of the vision-language families it
names at module level, and those classes still load when a build needs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime_genai.models.builder")

PROBE = """
import json, sys
from olivine_modelbuilder import build
build._import_builder()
import transformers
base = sys.modules["builders.base"]  # the builder puts its folder on sys.path
names = [n for n in build.LAZY_TRANSFORMERS_CLASSES if n in transformers._class_to_module]
families = {"transformers." + transformers._class_to_module[n] for n in names}
loaded = sorted(m for m in sys.modules if m in families)
stand_ins = [n for n in names if isinstance(getattr(base, n, None), build.LazyTransformersClass)]
left = [n for n in names if n in vars(transformers)]
real = base.Gemma3ForConditionalGeneration.from_pretrained
print(json.dumps({"names": names, "loaded": loaded, "stand_ins": stand_ins, "left": left,
                  "real": real.__qualname__,
                  "now_loaded": "transformers.models.gemma3.modeling_gemma3" in sys.modules}))
"""


def _probe(lazy: bool) -> dict:
    env = {"OLIVINE_LAZY_BUILDER_IMPORTS": "1" if lazy else "0"}
    import os

    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_builder_imports_without_vision_modeling_code() -> None:
    """Stand-ins in the builder's namespace, transformers untouched afterwards, and the real
    class (and its modeling module) behind ``from_pretrained`` on first use."""
    lazy = _probe(lazy=True)
    assert lazy["names"], "none of the stand-in names is a transformers class any more"
    assert lazy["stand_ins"] == lazy["names"]
    assert lazy["loaded"] == [], lazy["loaded"]  # none of their modeling modules
    assert lazy["left"] == []
    assert lazy["real"].endswith("from_pretrained")
    assert lazy["now_loaded"]
    eager = _probe(lazy=False)
    assert eager["stand_ins"] == []
    assert "transformers.models.gemma3.modeling_gemma3" in eager["loaded"]
