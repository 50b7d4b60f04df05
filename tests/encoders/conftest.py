"""Fixtures of the MiniLM example's end-to-end test (it spans olivine-transformers,
olivine-quantization and olivine-evaluators, so it stays with the host's cross-plugin tests).

The fixtures are those of ``plugins/olivine-transformers/tests/conftest.py``, loaded from its file.
"""

from __future__ import annotations

from olivine_testutil import encoder_fixtures

_fixtures = encoder_fixtures("olivine_encoder_fixtures_minilm")

in_repo = _fixtures.in_repo
minilm = _fixtures.minilm
ort_session = _fixtures.ort_session
