"""Fixtures of the rotation tests: a tiny trained Llama, random models of four shapes, text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

pytest.importorskip("olivine_rotate", reason="olivine-rotate is not installed")
pytest.importorskip("olivine_modelbuilder", reason="the tiny models come from olivine-modelbuilder")


@pytest.fixture(scope="session")
def trained_llama(cache_root: Path) -> Path:
    """A Llama (hidden 64, 2 layers, head size 16) trained 150 steps on the Sonnets (cached)."""
    from olivine.testing import seed
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    spec = TinySpec(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=192,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, tie_word_embeddings=True, steps=150,
                    seconds=None, batch_size=16, seq_len=64, seed=seed())
    return cached_model(spec, cache_root)


@pytest.fixture(scope="session")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibration and held-out text (two halves of the last tenth of the Sonnets)."""
    from olivine_modelbuilder.tinymodel import corpus_text

    text = corpus_text()
    tail = text[int(len(text) * 0.8):]
    folder = tmp_path_factory.mktemp("texts")
    out = {"calibration": folder / "calibration.txt", "heldout": folder / "heldout.txt"}
    out["calibration"].write_text(tail[:len(tail) // 2], encoding="utf-8")
    out["heldout"].write_text(tail[len(tail) // 2:], encoding="utf-8")
    return out
