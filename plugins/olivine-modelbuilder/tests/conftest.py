"""Fixtures of the model-builder plugin's tests.

Every model is made here: a byte-level BPE trained on the Sonnets, a tiny Qwen2
trained for a few hundred steps (cached between runs under the system's temp
folder, or ``$OLIVINE_TEST_CACHE``), and tiny random models of each family.
Torch and ONNX Runtime use one thread each.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import seed
from olivine_modelbuilder.tinymodel import TinySpec, cached_model

#: The briefly trained model of the correctness tests (about 5 s to train on one core); seeded
#: and trained on the tests' torch threads, so it is the same model on every run of a machine.
TEST_SPEC = TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     tie_word_embeddings=False, steps=300, seconds=None, batch_size=16,
                     seq_len=48, learning_rate=4e-3, seed=seed())


@pytest.fixture(scope="session")
def trained_model(cache_root: Path) -> Path:
    """A tiny Qwen2 chat model trained on the Sonnets (folder with weights and tokenizer)."""
    return cached_model(TEST_SPEC, cache_root / "trained")


@pytest.fixture(scope="session")
def tokenizer(trained_model: Path) -> Any:
    """The trained model's tokenizer (transformers)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(trained_model)


@pytest.fixture(scope="session")
def torch_model(trained_model: Path) -> Any:
    """The trained model loaded in torch, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(trained_model).eval()


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """Run the ModelBuilder pass in this process: ``build(model_dir, **config) -> OnnxModel``."""
    from olivine import Accelerator, HfModel, PassContext
    from olivine_modelbuilder.config import ModelBuilderConfig
    from olivine_modelbuilder.passes import ModelBuilder

    def run(model_dir: Path, accelerator: Accelerator | None = None, **config: Any) -> Any:
        work = tmp_path_factory.mktemp("build") / "output"
        work.mkdir()
        context = PassContext(work_dir=work, step_name="build",
                              accelerator=accelerator or Accelerator())
        return ModelBuilder().run(HfModel(path=str(model_dir)), ModelBuilderConfig(**config),
                                  context)

    return run


@pytest.fixture(scope="session")
def built(trained_model: Path, build: Callable[..., Any]) -> Callable[[str], Any]:
    """``built(precision)``: the trained model built once per precision for the whole session."""
    done: dict[str, Any] = {}

    def get(precision: str) -> Any:
        if precision not in done:
            done[precision] = build(trained_model, precision=precision)
        return done[precision]

    return get


@pytest.fixture
def model_copy(trained_model: Path, tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the trained model folder."""
    dest = tmp_path / "model"
    shutil.copytree(trained_model, dest)
    yield dest
