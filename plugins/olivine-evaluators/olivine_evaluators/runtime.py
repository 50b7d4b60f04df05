"""Running a model to measure it: ONNX Runtime sessions and transformers/torch models.

A runner takes numpy feeds and returns ``{output_name: array}``. ONNX and torch
runners of the same exported model name their outputs alike (``last_hidden_state``,
``logits``), because ``OnnxConversion`` exports the transformers output fields under
their own names. Heavy libraries are imported here; import this module lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from olivine import HfModel, ModelHandle, OnnxModel, UsageError

log = logging.getLogger(__name__)

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxRunner:
    """An ONNX Runtime session over an ONNX model handle (or a ``.onnx`` path).

    The session honours the handle's ``inference_settings`` (see :mod:`olivine.ortsession`);
    ``overrides`` (a metric's settings) replace them key by key, ``provider`` and the thread
    and optimization arguments override single settings, and ``default_provider`` (the
    target accelerator's) applies when nothing names a provider. ``settings`` and
    ``summary`` tell what the session was made with (the summary is read back from it).
    """

    kind = "onnx"

    def __init__(self, model: OnnxModel | str | Path, provider: str | None = None,
                 intra_op_num_threads: int | None = None, inter_op_num_threads: int | None = None,
                 graph_optimization_level: int | None = None,
                 provider_options: Mapping[str, Any] | None = None, *,
                 overrides: Mapping[str, Any] | None = None,
                 default_provider: str | None = None) -> None:
        from olivine.ortsession import (
            create_session,
            model_settings,
            onnx_model_file,
            session_settings,
            session_summary,
        )

        handle = model if isinstance(model, OnnxModel) else None
        path = onnx_model_file(model)
        self.path = path
        defaults = [default_provider or "CPUExecutionProvider"]
        ov = dict(overrides or {})
        flat = {k: v for k, v in (("intra_op_num_threads", intra_op_num_threads),
                                  ("inter_op_num_threads", inter_op_num_threads),
                                  ("graph_optimization_level", graph_optimization_level))
                if v is not None}
        if flat:
            base = ov.get("session_options") or model_settings(handle).get("session_options")
            ov["session_options"] = {**(base or {}), **flat}
        if provider or provider_options:
            names = [provider] if provider else \
                session_settings(handle, ov, defaults)["execution_provider"][:1]
            ov["execution_provider"] = names
            ov["provider_options"] = [dict(provider_options or {})]
        self.settings = session_settings(handle, ov, defaults)
        self.session = create_session(path, self.settings)
        self.summary = session_summary(self.session)
        log.info("ONNX Runtime session for %s: %s", path.name, self.summary)
        self.io_bind = bool(self.settings.get("io_bind"))
        self.inputs = {i.name: (i.shape, i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.vocab_size = _vocab_size(path.parent)
        self.head_size = _head_size(path.parent)

    @property
    def input_names(self) -> list[str]:
        """The session's input names."""
        return list(self.inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on ``feeds`` (extra entries are dropped; inputs a dataset gave by position are
        named in the session's order); return every output by name."""
        if feeds and all(str(k).startswith("#") for k in feeds):
            if len(feeds) != len(self.inputs):
                raise UsageError(f"the data gives {len(feeds)} unnamed input(s) but the model "
                                 f"takes {', '.join(self.inputs)}; give the inputs as a dict "
                                 "of input name -> array")
            feeds = {name: feeds[f"#{i}"] for i, name in enumerate(self.inputs)}
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        if self.io_bind:  # inference_settings.io_bind: inputs and outputs bound, as Olive does
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        else:
            outs = self.session.run(None, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def input_spec(self, batch_size: int, seq_len: int) -> dict[str, tuple[list[int], str]]:
        """Each input's concrete shape (dynamic dims become batch/sequence) and ORT type."""
        spec = {}
        for name, (shape, typ) in self.inputs.items():
            dims = []
            for axis, dim in enumerate(shape):
                if isinstance(dim, int) and dim > 0:
                    dims.append(dim)
                elif "past" in name and axis == 2:
                    dims.append(0)
                elif "past" in name and axis == 3 and self.head_size:
                    dims.append(self.head_size)  # onnxruntime-genai models: 'kv_cache_dim'
                else:
                    dims.append(batch_size if axis == 0 else seq_len)
            spec[name] = (dims, typ)
        return spec


class TorchRunner:
    """A transformers model (the reference of ONNX exports), run with torch on CPU."""

    kind = "hf"

    def __init__(self, model: HfModel, output_names: list[str] | None = None) -> None:
        import torch

        from olivine_transformers.hf import auto_class

        kwargs = model.load_options()
        kwargs.setdefault("attn_implementation", "eager")
        try:
            self.model = auto_class(model.task).from_pretrained(model.path, **kwargs).eval()
        except OSError as exc:
            raise UsageError(f"cannot load {model.path!r} for task {model.task!r}: {exc}") from exc
        if hasattr(self.model.config, "use_cache"):
            self.model.config.use_cache = False
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self.input_names = [n for n in TEXT_INPUTS if n in params]
        if "token_type_ids" in self.input_names and not getattr(
                self.model.config, "type_vocab_size", 0):
            self.input_names.remove("token_type_ids")
        self.path = Path(model.path)
        self.vocab_size = int(getattr(self.model.config, "vocab_size", 1000))
        self._torch = torch
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with keyword inputs; return the tensor fields of the output by name."""
        torch = self._torch
        inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()
                  if k in self.input_names}
        with torch.no_grad():
            out = self.model(**inputs, return_dict=True)
        result = {}
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                result[key] = value.float().numpy() if value.is_floating_point() else value.numpy()
        return result

    def input_spec(self, batch_size: int, seq_len: int) -> dict[str, tuple[list[int], str]]:
        """Text inputs of the given shape."""
        return {n: ([batch_size, seq_len], "tensor(int64)") for n in self.input_names}


Runner = OnnxRunner | TorchRunner


def _head_size(folder: Path) -> int | None:
    """The attention head size of a decoder, from genai_config.json or config.json."""
    import json

    try:
        if (folder / "genai_config.json").is_file():
            cfg = json.loads((folder / "genai_config.json").read_text())
            return int(cfg["model"]["decoder"]["head_size"])
        if (folder / "config.json").is_file():
            cfg = json.loads((folder / "config.json").read_text())
            return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return None
    return None


def _vocab_size(folder: Path, default: int = 100) -> int:
    """``vocab_size`` from the config.json beside an ONNX model (random ids stay in range)."""
    import json

    try:
        return int(json.loads((folder / "config.json").read_text()).get("vocab_size") or default)
    except (OSError, ValueError, TypeError):
        return default


def make_runner(model: ModelHandle, user_config: Mapping[str, Any] | None = None,
                provider: str = "CPUExecutionProvider") -> Runner:
    """A runner for ``model`` (``provider``: the target accelerator's). An ONNX model's
    session honours the model's ``inference_settings``; ``user_config`` may override them
    (Olive's ``inference_settings.onnx`` and ``io_bind``, olivine's ``execution_provider``,
    ``intra_op_num_threads``, ``inter_op_num_threads``, ``graph_optimization_level``)."""
    cfg = dict(user_config or {})
    if isinstance(model, OnnxModel):
        return OnnxRunner(model, provider=cfg.get("execution_provider"),
                          intra_op_num_threads=cfg.get("intra_op_num_threads"),
                          inter_op_num_threads=cfg.get("inter_op_num_threads"),
                          graph_optimization_level=cfg.get("graph_optimization_level"),
                          overrides=metric_settings(cfg), default_provider=provider)
    if isinstance(model, HfModel):
        return TorchRunner(model)
    factory = getattr(model, "make_runner", None)
    if callable(factory):  # a plugin's model kind that runs itself (olivine-openvino's IR)
        runner: Runner = factory(cfg)
        return runner
    raise UsageError(f"cannot run a {model.kind} model; give an ONNX or Hugging Face model")


def metric_settings(user_config: Mapping[str, Any]) -> dict[str, Any]:
    """A metric's own ONNX settings: ``user_config.inference_settings.onnx`` (Olive's form,
    keyed by framework) and ``user_config.io_bind``."""
    given = user_config.get("inference_settings") or {}
    if not isinstance(given, Mapping) or not isinstance(given.get("onnx") or {}, Mapping):
        raise UsageError("user_config.inference_settings: expected an object keyed by framework "
                         f"(onnx), got {given!r}")
    out = dict(given.get("onnx") or {})
    if user_config.get("io_bind"):
        out["io_bind"] = True
    return out


_NP_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
             "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


def dummy_feeds(runner: Runner, batch_size: int = 1, seq_len: int = 128,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``runner``: token ids, all-ones masks, zero type ids, float noise."""
    rng = np.random.default_rng(seed)
    vocab = getattr(runner, "vocab_size", 1000)
    feeds: dict[str, np.ndarray] = {}
    for name, (shape, typ) in runner.input_spec(batch_size, seq_len).items():
        dtype = _NP_TYPES.get(typ, np.float32)
        if name == "input_ids":
            feeds[name] = rng.integers(min(100, vocab // 2), vocab, shape).astype(dtype)
        elif "mask" in name:
            feeds[name] = np.ones(shape, dtype)
        elif name == "position_ids":
            feeds[name] = np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = np.zeros(shape, dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def data_batches(model: ModelHandle, metric: Any, context: Any, max_samples: int | None = None,
                 required: bool = False) -> Any:
    """The metric's data config loaded for ``model`` (a TextData), or ``None`` when it has none."""
    if metric.data_config is None:
        if required:
            raise UsageError(f"metric {metric.name!r} ({metric.type}) needs data: set its "
                             "data_config to a name in data_configs")
        return None
    dc = context.data_configs.get(metric.data_config)
    if dc is None:
        raise UsageError(f"metric {metric.name!r}: data config {metric.data_config!r} is not "
                         "defined")
    from olivine_transformers.data import load_text_data

    tokenizer_model = model if isinstance(model, OnnxModel) else context.reference or model
    return load_text_data(dc, tokenizer_model if _has_tokenizer(tokenizer_model) else model,
                          max_samples=max_samples)


def _has_tokenizer(model: ModelHandle | None) -> bool:
    if model is None:
        return False
    folder = Path(model.path)
    folder = folder.parent if folder.is_file() else folder
    return any((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json",
                                               "vocab.txt")) or bool(
        model.attrs_dict().get("hf_model_path"))
