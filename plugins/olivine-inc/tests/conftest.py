"""Fixtures of the INC tests: the encoder tests' tiny BERT, reused.

The fixtures are those of ``plugins/olivine-transformers/tests/conftest.py``, loaded from its file.
"""

from __future__ import annotations

from olivine_testutil import encoder_fixtures

_fixtures = encoder_fixtures("olivine_encoder_fixtures_inc")

tiny_bert = _fixtures.tiny_bert
exported_tiny_bert = _fixtures.exported_tiny_bert
workflow = _fixtures.workflow
ort_session = _fixtures.ort_session
minilm = _fixtures.minilm


# -- the weight-quantization tests' trained tiny model (IncAutoRound) ---------------------------
def _weightquant_fixtures() -> object:
    """olivine-weightquant's tests/conftest.py, loaded from its file (its tiny_model fixture, wq_tiny)."""
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parents[2] / "olivine-weightquant" / "tests"
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    spec = importlib.util.spec_from_file_location("olivine_weightquant_fixtures_inc",
                                                  here / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_model = _weightquant_fixtures().tiny_model  # type: ignore[attr-defined]
