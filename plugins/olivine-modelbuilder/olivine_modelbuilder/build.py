"""Run the onnxruntime-genai model builder on a Hugging Face model.

The builder is driven the way its own command line drives it: options become
``KEY=VALUE`` strings for ``parse_extra_options`` and then ``create_model`` runs.
Its printed output is captured line by line into the log, and its "Reading layer
N" lines become progress reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from olivine import OlivineError, UsageError

from .lowmem import low_memory_quantization

ProgressFn = Callable[[float, "float | None", str], None]
log = logging.getLogger("olivine.pass.ModelBuilder")

_LAYER = re.compile(r"Reading (?:decoder )?layer (\d+)")


class _LineSink(io.TextIOBase):
    """A text stream that logs each complete line and turns layer lines into progress."""

    def __init__(self, logger: logging.Logger, progress: ProgressFn | None, layers: int | None):
        self.logger = logger
        self.progress = progress
        self.total = (layers + 3) if layers else None
        self.buffer_text = ""
        self.lines: list[str] = []

    def writable(self) -> bool:
        """Always: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Buffer ``text`` and handle every line it completes."""
        self.buffer_text += text
        *complete, self.buffer_text = re.split(r"[\r\n]", self.buffer_text)
        for line in complete:
            if line.strip():
                self._line(line.strip())
        return len(text)

    def _line(self, line: str) -> None:
        self.lines = [*self.lines[-40:], line]
        self.logger.debug("builder: %s", line)
        if self.progress is None:
            return
        match = _LAYER.search(line)
        if match:
            self.progress(int(match[1]) + 1, self.total, f"reading layer {match[1]}")
        elif line.startswith("Reading final norm"):
            self.progress((self.total or 3) - 2, self.total, "reading final norm and LM head")
        elif line.startswith("Saving ONNX model"):
            self.progress((self.total or 3) - 1, self.total, "saving the ONNX model")


@contextlib.contextmanager
def _captured(sink: _LineSink) -> Iterator[None]:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _as_text(key: str, value: Any) -> str:
    """An option value as the builder's command line spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ("/" if key == "op_types_to_quantize" else ",").join(map(str, value))
    return str(value)


#: Vision-language classes the builder's ``builders/base.py`` imports from transformers at
#: module level (onnxruntime-genai 0.18) though it only calls ``from_pretrained`` on them for
#: those families: importing their modeling code costs about a second per build.
LAZY_TRANSFORMERS_CLASSES = (
    "Gemma3ForConditionalGeneration", "Lfm2VlForConditionalGeneration",
    "Mistral3ForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
)


class LazyTransformersClass:
    """A stand-in for a transformers class that imports it on first use (``from_pretrained``
    or any other attribute), so the builder's module imports without those modeling files."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _real(self) -> Any:
        import transformers

        return getattr(transformers, self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy transformers.{self._name}>"


@contextlib.contextmanager
def _lazy_vision_classes() -> Iterator[None]:
    """While the builder imports, ``from transformers import X`` gives a :class:`LazyTransformersClass`
    for the classes of :data:`LAZY_TRANSFORMERS_CLASSES` (``OLIVINE_LAZY_BUILDER_IMPORTS=0`` turns
    this off). transformers itself is left as it was afterwards."""
    if os.environ.get("OLIVINE_LAZY_BUILDER_IMPORTS", "1") == "0":
        yield
        return
    import transformers

    known = getattr(transformers, "_class_to_module", {})
    placed = [n for n in LAZY_TRANSFORMERS_CLASSES if n in known and n not in vars(transformers)]
    for name in placed:
        setattr(transformers, name, LazyTransformersClass(name))
    try:
        yield
    finally:
        for name in placed:
            if isinstance(vars(transformers).get(name), LazyTransformersClass):
                delattr(transformers, name)


def _import_builder() -> Any:
    try:
        with _lazy_vision_classes():
            from onnxruntime_genai.models import builder
    except ModuleNotFoundError as exc:
        raise OlivineError(
            f"the onnxruntime-genai model builder cannot be imported: {exc}. It needs "
            "onnxruntime-genai, onnx-ir, torch and transformers; `pip install olivine-modelbuilder` "
            "installs them") from exc
    return builder


def _hub_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return str(Path.home() / ".cache" / "huggingface" / "hub")


def build_model(source: str, output_dir: Path, *, precision: str, provider: str,
                options: Mapping[str, Any], local: bool = True, trust_remote_code: bool = False,
                adapter_path: str | None = None, search: Mapping[str, Any] | None = None,
                num_layers: int | None = None, norm_epsilon: float | None = None,
                progress: ProgressFn | None = None, logger: logging.Logger | None = None) -> Path:
    """Convert ``source`` (a local folder or a hub id) into ``output_dir``; return the model file.

    ``options`` are the builder's ``extra_options`` (its names). ``search`` is merged
    into genai_config.json's ``search`` section. ``norm_epsilon``, when given, is
    written into LayerNormalization nodes whose epsilon differs (see
    :func:`fix_norm_epsilon`). Raises :class:`UsageError` when the builder refuses the
    options and lets build failures propagate.
    """
    logger = logger or log
    builder = _import_builder()
    extra = dict(options)
    if trust_remote_code:
        extra["hf_remote"] = True
    if adapter_path:
        extra["adapter_path"] = adapter_path
    pairs = [f"{key}={_as_text(key, value)}" for key, value in extra.items()]
    output_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix="olivine-modelbuilder-"))
    cache_dir = str(temp) if local else _hub_cache()
    model_name, input_path = (None, source) if local else (source, "")
    sink = _LineSink(logger, progress, num_layers)
    env_before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with _captured(sink):
            try:
                prepared = builder.parse_extra_options(model_name, input_path, str(output_dir),
                                                       precision, provider, cache_dir, pairs)
            except (ValueError, NotImplementedError) as exc:
                raise UsageError(f"the model builder refused the options "
                                 f"{' '.join(pairs) or '(none)'}: {exc}") from None
            with low_memory_quantization(output_dir):
                builder.create_model(model_name, input_path, str(output_dir), precision, provider,
                                     cache_dir, **prepared)
    except NotImplementedError as exc:
        raise UsageError(f"the model builder cannot build this model: {exc}") from None
    finally:
        if env_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = env_before
        shutil.rmtree(temp, ignore_errors=True)
    model_file = output_dir / str(extra.get("filename", "model.onnx"))
    config_file = output_dir / "genai_config.json"
    parts = model_parts(output_dir, model_file.name)
    if not parts or not config_file.is_file():
        tail = "\n".join(sink.lines[-5:])
        raise OlivineError(f"the model builder finished without writing {model_file.name} and "
                           f"genai_config.json into {output_dir}; its last output:\n{tail}")
    if search:
        update_search(config_file, search)
    if norm_epsilon is not None:
        changed = sum(fix_norm_epsilon(part, norm_epsilon) for part in parts)
        if changed:
            logger.warning("set epsilon %g (config.json) on %d LayerNormalization nodes where the "
                           "builder wrote its default", norm_epsilon, changed)
    return parts[0]


def model_parts(output_dir: Path, file_name: str = "model.onnx") -> list[Path]:
    """The ONNX files a build wrote into ``output_dir``: ``[file_name]``, or for a model built
    in parts (Whisper: ``decoder.onnx`` and ``encoder.onnx``, named by the builder) every
    ``.onnx`` file there, sorted by name as Olive lists them; ``[]`` when there is none."""
    single = output_dir / file_name
    if single.is_file():
        return [single]
    return sorted(p for p in output_dir.glob("*.onnx") if p.is_file())


NORM_OPS = ("LayerNormalization", "SkipLayerNormalization")


def fix_norm_epsilon(model_file: Path, epsilon: float) -> int:
    """Set ``epsilon`` on the LayerNormalization nodes of ``model_file``; return how many changed.

    The builder of onnxruntime-genai 0.18 takes the epsilon from ``rms_norm_eps`` only
    and uses 1e-6 otherwise, so models that name it ``layer_norm_eps`` (Phi) or
    ``norm_eps`` (Nemotron) got 1e-6 instead of their 1e-5: logits off by about 1%
    on a tiny model (measured). Only the graph is rewritten; weights are untouched.
    """
    import onnx

    proto = onnx.load(str(model_file), load_external_data=False)
    changed = 0
    for node in proto.graph.node:
        if node.op_type not in NORM_OPS:
            continue
        for attribute in node.attribute:
            if attribute.name == "epsilon" and abs(attribute.f - epsilon) > 1e-3 * epsilon:
                attribute.f = epsilon
                changed += 1
    if changed:
        onnx.save_model(proto, str(model_file))
    return changed


def update_search(config_file: Path, search: Mapping[str, Any]) -> None:
    """Merge ``search`` into the ``search`` section of a genai_config.json."""
    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["search"] = {**(data.get("search") or {}), **search}
    config_file.write_text(json.dumps(data, indent=4), encoding="utf-8")
