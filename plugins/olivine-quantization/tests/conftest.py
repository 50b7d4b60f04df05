"""Fixtures of the int8/fusion/systems tests: olivine-transformers' tests' tiny BERT, reused.

The fixtures are those of ``plugins/olivine-transformers/tests/conftest.py``, loaded from its file.
"""

from __future__ import annotations

from olivine_testutil import encoder_fixtures

_fixtures = encoder_fixtures("olivine_encoder_fixtures")

tiny_bert = _fixtures.tiny_bert
exported_tiny_bert = _fixtures.exported_tiny_bert
workflow = _fixtures.workflow
ort_session = _fixtures.ort_session
SENTENCES = _fixtures.SENTENCES
