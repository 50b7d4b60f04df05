"""Fixtures of the evaluator tests on encoders: olivine-transformers' tests' tiny models, reused.

The fixtures are those of ``plugins/olivine-transformers/tests/conftest.py``, loaded from its file.
"""

from __future__ import annotations

from olivine_testutil import encoder_fixtures

_fixtures = encoder_fixtures("olivine_encoder_fixtures_eval")

tiny_bert = _fixtures.tiny_bert
tiny_classifier = _fixtures.tiny_classifier
tiny_gpt2 = _fixtures.tiny_gpt2
exported_tiny_bert = _fixtures.exported_tiny_bert
workflow = _fixtures.workflow
