"""Fixtures of the INC tests: the encoder tests' tiny BERT, reused.

The fixtures are those of ``tests/encoders/conftest.py`` (conftest modules cannot be imported
by name: each folder has one), loaded from its file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "olivine_encoder_fixtures_inc", Path(__file__).resolve().parents[1] / "encoders" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

tiny_bert = _fixtures.tiny_bert
exported_tiny_bert = _fixtures.exported_tiny_bert
workflow = _fixtures.workflow
ort_session = _fixtures.ort_session
minilm = _fixtures.minilm
