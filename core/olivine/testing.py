"""olivine's test kit for plugin authors: a pytest plugin, loaded only when asked for.

A plugin's tests load it in their ``conftest.py`` (or with ``pytest -p olivine.testing``);
it is never loaded into other pytest runs (there is no ``pytest11`` entry point)::

    pytest_plugins = ["olivine.testing"]

    def test_my_pass(tiny_onnx_model, run_pass):
        out = run_pass("MyPass", tiny_onnx_model, {"alpha": 0.5})
        assert out.kind == "onnx"

Fixtures: ``tiny_onnx_model`` (a folder with a small MLP, ``x: [batch, 16] -> y: [batch, 4]``),
``tiny_hf_model`` (a Llama-shaped decoder with a local word-level tokenizer, built once
per session), ``run_pass`` and ``run_workflow`` (bound to the test's temporary folder),
``assert_config_error``, ``write_config`` (a workflow dict as a JSON file) and ``cli``
(``olivine ARGS`` in this process: exit code, stdout, stderr). The functions behind them
are importable too. Heavy libraries (onnx, torch, transformers) are imported when a
fixture is used.

For tests that train tiny models and compare quality numbers: :func:`seed` and
:func:`threads` (set by ``$OLIVINE_TEST_SEED`` and ``$OLIVINE_TEST_THREADS``, so that a
spread measurement can rerun the same tests under other seeds and thread counts),
:func:`pin_threads`, and :func:`record_quality` (appends the compared numbers to
``$OLIVINE_QUALITY_LOG`` when it is set).
"""

from __future__ import annotations

import json
import os
import tempfile
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["QUALITY_LOG_ENV", "SEED_ENV", "THREADS_ENV", "WORDS", "assert_config_error", "cli_main",
           "input_model_config", "make_hf_model", "make_onnx_model", "make_workflow", "pin_threads",
           "record_quality", "run_pass", "run_workflow", "seed", "threads", "using_plugin"]

#: The word list of :func:`make_hf_model`'s tokenizer (lower-case, space-separated text).
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "a", "model", "runs", "fast",
         "on", "small", "data", "and", "onnx", "runtime", "makes", "it", "faster", "when", "weights",
         "are", "quantized", "to", "fewer", "bits", "per", "value")


#: The environment variable :func:`seed` reads (default 0).
SEED_ENV = "OLIVINE_TEST_SEED"
#: The environment variable :func:`threads` reads (default 1).
THREADS_ENV = "OLIVINE_TEST_THREADS"
#: The file :func:`record_quality` appends to, when set.
QUALITY_LOG_ENV = "OLIVINE_QUALITY_LOG"
#: The thread-count variables of OpenMP, MKL and OpenBLAS (read when a library loads).
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# -- seeds, threads and measured numbers ----------------------------------------------------
def seed() -> int:
    """The seed for training a test's tiny models: ``$OLIVINE_TEST_SEED``, 0 when unset.

    A quality test that seeds with it can be rerun under other seeds to measure how far
    its compared numbers spread, and its margins chosen from that spread.
    """
    return int(os.environ.get(SEED_ENV) or 0)


def threads() -> int:
    """Threads for torch and ONNX Runtime in tests: ``$OLIVINE_TEST_THREADS``, 1 when unset."""
    return max(1, int(os.environ.get(THREADS_ENV) or 1))


def pin_threads(count: int | None = None) -> int:
    """Give torch, OpenMP, MKL and OpenBLAS ``count`` threads (default :func:`threads`).

    The environment variables are set only where unset (libraries read them when they
    load, so call this early, e.g. from a ``conftest.py``); torch's pool is set now when
    torch is installed. On a small machine, pools that each take every core make tests
    slow and their numbers noisy. Returns the count.
    """
    count = threads() if count is None else max(1, count)
    for var in _THREAD_VARS:
        os.environ.setdefault(var, str(count))
    try:
        import torch
    except ImportError:
        return count
    torch.set_num_threads(count)
    return count


def record_quality(claim: str, **values: float) -> None:
    """Append ``{"claim": claim, **values}`` as a JSON line to ``$OLIVINE_QUALITY_LOG`` if set.

    A quality test records the numbers it compares (a KL divergence, a perplexity, a
    cosine) before asserting on them; a spread measurement collects them over seeds and
    thread counts. Without the variable nothing is written.
    """
    target = os.environ.get(QUALITY_LOG_ENV)
    if not target:
        return
    row = {"claim": claim, **{k: float(v) for k, v in values.items()}}
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# -- models ---------------------------------------------------------------------------------
def make_onnx_model(folder: Path, *, external_data: bool = False, seed: int = 0) -> Path:
    """Write a small MLP (``x: float[batch, 16] -> y: float[batch, 4]``) to ``folder/model.onnx``.

    MatMul, Add and Relu with fixed random weights; ``external_data`` puts the weights in
    ``model.onnx.data``. Returns ``folder``.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=external_data,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return folder


def make_hf_model(folder: Path, model_type: str = "llama", *, seed: int = 0, **overrides: Any) -> Path:
    """Save an untrained tiny decoder of ``model_type`` (``llama``, ``qwen2``, ...) with a tokenizer.

    Two layers, hidden size 64, 4 attention heads and 2 key/value heads; the tokenizer is a
    word-level one over :data:`WORDS` built here (no hub access). ``overrides`` go to the
    transformers config. Returns ``folder``.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate([*specials, *dict.fromkeys(WORDS)])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>",
                                        unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    settings: dict[str, Any] = {
        "vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "pad_token_id": vocab["<pad>"],
        "bos_token_id": vocab["<s>"], "eos_token_id": vocab["</s>"], "tie_word_embeddings": False,
    }
    settings.update(overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- running --------------------------------------------------------------------------------
def input_model_config(model: Any) -> dict[str, Any]:
    """The workflow's ``input_model`` for ``model``: a dict (as is), a handle, or a path.

    A folder with ``config.json`` is a Hugging Face model; a ``.onnx`` file, or a folder
    with one, an ONNX model.
    """
    from olivine.models import HfModel, ModelHandle, OnnxModel

    if isinstance(model, Mapping):
        return dict(model)
    if isinstance(model, OnnxModel):
        return {"type": "ONNXModel", "model_path": str(model.model_file())}
    if isinstance(model, HfModel):
        return {"type": "HfModel", "model_path": model.path, "task": model.task}
    if isinstance(model, ModelHandle):
        raise TypeError(f"run_pass takes an input_model dict for {model.kind} models")
    path = Path(model)
    if path.is_dir() and (path / "config.json").is_file():
        return {"type": "HfModel", "model_path": str(path)}
    if path.suffix == ".onnx" or (path.is_dir() and any(path.glob("*.onnx"))):
        return {"type": "ONNXModel", "model_path": str(path)}
    raise ValueError(f"{path}: neither a Hugging Face folder (config.json) nor an ONNX model")


def make_workflow(tmp_path: Path, model: str | Path, passes: dict[str, Any],
                  **extra: Any) -> dict[str, Any]:
    """A workflow dict that runs ``passes`` on the ONNX model at ``model`` (a ``.onnx`` file
    or a folder with one), writing its output and cache under ``tmp_path``.

    Errors only are logged (``log_severity_level`` 3); ``extra`` adds or replaces top-level
    keys (``systems``, ``evaluators``, ``search_strategy``, ...).
    """
    config: dict[str, Any] = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "passes": passes,
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3,
    }
    config.update(extra)
    return config


@contextmanager
def using_plugin(*objects: Any) -> Iterator[None]:
    """Load ``objects`` (modules or classes with hook implementations) as plugins meanwhile.

    Steps run in this process while it lasts (a child process would not know them).
    """
    from olivine.plugins import extra_plugins

    with extra_plugins(list(objects)):
        yield


def _temp(folder: Path | None, name: str) -> Path:
    return (folder or Path(tempfile.mkdtemp(prefix="olivine-test-"))) / name


def run_workflow(config: Mapping[str, Any] | str | Path, *, tmp_path: Path | None = None,
                 **overrides: Any) -> Any:
    """Run a workflow (a dict or a file) and return its :class:`olivine.RunResult`.

    ``output_dir`` and ``cache_dir`` default to folders under ``tmp_path`` (a new
    temporary folder when ``None``); ``log_severity_level`` defaults to 3 (errors only).
    """
    import olivine

    if isinstance(config, Mapping):
        config = dict(config)
        config.setdefault("output_dir", str(_temp(tmp_path, "output")))
        config.setdefault("cache_dir", str(_temp(tmp_path, "cache")))
        if "log_severity_level" not in config and "log_severity_level" not in config.get("engine", {}):
            config["log_severity_level"] = 3
    return olivine.run(config, **overrides)


def run_pass(pass_: str | type, model: Any, config: Mapping[str, Any] | None = None, *,
             tmp_path: Path | None = None, data_configs: Mapping[str, Any] | None = None,
             isolation: str | None = None, **workflow: Any) -> Any:
    """Run one pass on ``model`` in a temporary cache and return the output model's handle.

    ``pass_`` is a registered pass type name, or a :class:`olivine.Pass` subclass (loaded
    for this call if no installed plugin registers it; it then runs in this process).
    ``model``: see :func:`input_model_config`. ``data_configs`` are the workflow's (a
    mapping of name to config); ``workflow`` adds other top-level keys (``systems``, ...).
    """
    in_process = not isinstance(pass_, str)
    name = pass_ if isinstance(pass_, str) else getattr(pass_, "name", "")
    raw: dict[str, Any] = {"input_model": input_model_config(model),
                           "passes": {"step": {"type": name, **dict(config or {})}}, **workflow}
    if data_configs:
        raw["data_configs"] = [{"name": k, **v} for k, v in data_configs.items()]
    mode = isolation or ("never" if in_process else None)
    if mode is not None and "systems" not in raw:
        raw["systems"] = {"local": {"type": "LocalSystem", "isolation": mode}}
        raw["host"] = raw["target"] = "local"
    if in_process:
        from olivine.plugins import get_plugin_host

        if get_plugin_host().passes.get(name) is not pass_:
            plugin = types.SimpleNamespace(__name__=f"test-plugin-{name}",
                                           register_passes=_register_hook(pass_))
            with using_plugin(plugin):
                return run_workflow(raw, tmp_path=tmp_path).output_model
    return run_workflow(raw, tmp_path=tmp_path).output_model


def _register_hook(cls: Any) -> Callable[[Any], None]:
    from olivine.hookspecs import hookimpl

    @hookimpl
    def register_passes(register: Any) -> None:
        register(cls)

    return register_passes


def assert_config_error(config: Mapping[str, Any] | str | Path, message: str, exit_code: int = 2, *,
                        tmp_path: Path | None = None) -> Any:
    """Assert that olivine rejects ``config`` with ``message`` (a substring) and ``exit_code``.

    The config is validated, and run when validation passes (a problem found while running
    counts too). Returns the error.
    """
    import olivine
    from olivine.errors import OlivineError

    try:
        if isinstance(config, Mapping):
            olivine.validate(dict(config))
        run_workflow(config, tmp_path=tmp_path)
    except OlivineError as exc:
        text = str(exc)
        assert message in text, f"the error does not say {message!r}:\n{text}"
        assert exc.exit_code == exit_code, f"exit code {exc.exit_code}, not {exit_code}:\n{text}"
        return exc
    pytest.fail(f"the config was accepted and ran; expected an error saying {message!r}")


def cli_main(argv: list[str] | None = None) -> int:
    """Run ``olivine ARGV`` in this process and return its exit code (as the shell would see it)."""
    from olivine.cli import main

    return main(argv)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def tiny_onnx_model(tmp_path: Path) -> Path:
    """A folder with a small ONNX MLP (``model.onnx``; ``x: [batch, 16] -> y: [batch, 4]``)."""
    return make_onnx_model(tmp_path / "tiny-onnx")


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-shaped decoder with a local tokenizer (built once per test session).

    Tests that use it are skipped where torch or transformers is not installed.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return make_hf_model(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a workflow dict as JSON into the test's folder and return its path."""

    def write(data: Mapping[str, Any], name: str = "workflow.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data, indent=2))
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``olivine ARGS`` in this process; return ``(exit code, stdout, stderr)``."""
    from olivine.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(name="run_pass")
def run_pass_fixture(tmp_path: Path) -> Callable[..., Any]:
    """:func:`run_pass` with its cache and output in the test's temporary folder."""

    def run(pass_: str | type, model: Any, config: Mapping[str, Any] | None = None,
            **kwargs: Any) -> Any:
        return run_pass(pass_, model, config, tmp_path=tmp_path, **kwargs)

    return run


@pytest.fixture(name="run_workflow")
def run_workflow_fixture(tmp_path: Path) -> Callable[..., Any]:
    """:func:`run_workflow` with its cache and output in the test's temporary folder."""

    def run(config: Mapping[str, Any] | str | Path, **overrides: Any) -> Any:
        return run_workflow(config, tmp_path=tmp_path, **overrides)

    return run


@pytest.fixture(name="assert_config_error")
def assert_config_error_fixture(tmp_path: Path) -> Callable[..., Any]:
    """:func:`assert_config_error` with any run in the test's temporary folder."""

    def check(config: Mapping[str, Any] | str | Path, message: str, exit_code: int = 2) -> Any:
        return assert_config_error(config, message, exit_code, tmp_path=tmp_path)

    return check
