"""Fixtures of the weight-quantization tests: a tiny trained model, small ONNX models, data files."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("olivine_weightquant", reason="olivine-weightquant is not installed")
pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import wq_tiny as tiny  # noqa: E402

from olivine.testing import seed, threads  # noqa: E402


@attrs.frozen
class TinyModel:
    """The trained tiny model and its text."""

    path: Path
    calibration: Path
    heldout: Path
    plays: bool  # trained on three plays (else on the Sonnets only)

    def tokenizer(self) -> Any:
        """Its tokenizer."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    def heldout_text(self) -> str:
        """Text it never saw."""
        return self.heldout.read_text(encoding="utf-8")


def _cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("olivine-weightquant"))
    return tmp_path_factory.mktemp("olivine-weightquant")


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A Qwen2-shaped model (hidden 128, 4 layers) trained for 300 steps on Shakespeare (~1 min).

    Seeded (``$OLIVINE_TEST_SEED``, default 0) and trained on a fixed thread count
    (``$OLIVINE_TEST_THREADS``, default 1) for a fixed number of steps: the same model on
    every run of one machine. Another CPU trains a slightly different one: the quality
    tests' margins cover that (see benchmarks/quality_spread.py).
    """
    import torch

    text = tiny.corpus_text()
    if text is None:
        pytest.skip("no Shakespeare text: install shakespeare>=0.6 (or olivine-modelbuilder)")
    key = hashlib.sha256((HERE / "wq_tiny.py").read_bytes() + text[:4096].encode()
                         + torch.__version__.encode() + f"seed={seed()}".encode()).hexdigest()[:16]
    folder = _cache_root(request, tmp_path_factory) / f"tiny-{key}"
    if not (folder / "config.json").is_file():
        before = torch.get_num_threads()
        torch.set_num_threads(threads())
        try:
            tiny.train_model(folder, seed=seed())
        finally:
            torch.set_num_threads(before)
    data = folder.parent / f"{folder.name}-text"
    return TinyModel(folder, data / "calibration.txt", data / "heldout.txt",
                     plays=len(text) > 200_000)
