"""Calibration data for static quantization: a data config or a local text file, tokenized.

Text is tokenized with the tokenizer beside the ONNX model (``OnnxConversion``
copies it there) unless ``tokenizer`` names another; this needs the
olivine-transformers plugin (``pip install olivine-quantization[text]``).
"""

from __future__ import annotations

from typing import Any

from olivine import ModelHandle, OnnxModel, PassContext, UsageError


class FeedsReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self.feeds = feeds
        self._next = 0

    def get_next(self) -> dict[str, Any] | None:
        """The next batch, or ``None`` at the end."""
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def __iter__(self) -> FeedsReader:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def graph_input_names(model: OnnxModel) -> list[str]:
    """The model's graph inputs (initializers excluded)."""
    import onnx

    proto = onnx.load(str(model.model_file()), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits]


def graph_input_types(model: OnnxModel) -> dict[str, Any]:
    """numpy dtype of each graph input (those with a tensor element type)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = onnx.load(str(model.model_file()), load_external_data=False)
    out = {}
    for i in proto.graph.input:
        elem = i.type.tensor_type.elem_type
        if elem:
            out[i.name] = tensor_dtype_to_np_dtype(elem)
    return out


def _cast(feeds: dict[str, Any], types: dict[str, Any]) -> dict[str, Any]:
    """Numbers read from files (float64 from JSON) as the model's input types."""
    return {k: v.astype(types[k]) if k in types and hasattr(v, "astype") and
            v.dtype != types[k] and v.dtype.kind in "fiub" else v for k, v in feeds.items()}


def make_reader(model: ModelHandle, config: Any, context: PassContext) -> FeedsReader:
    """A reader of at most ``config.calibration_samples`` samples for ``model``."""
    assert isinstance(model, OnnxModel)
    try:
        from olivine_transformers.data import load_text_data, text_file_data
    except ImportError:
        raise UsageError("calibration data is text and needs the olivine-transformers plugin to "
                         "tokenize it: pip install olivine-transformers") from None
    if config.data_config is not None:
        dc = context.data_configs.get(config.data_config)
        if dc is None:
            raise UsageError(f"data_config {config.data_config!r} is not defined in the workflow")
        data = load_text_data(dc, model, max_samples=config.calibration_samples)
    else:
        data = text_file_data(config.calibration_file, model, config.calibration_samples,
                              max_length=config.calibration_seq_len, tokenizer=config.tokenizer)
    names = graph_input_names(model)
    feeds = [_cast(f, graph_input_types(model)) for f in data.feeds(names)]
    missing = [n for n in names if feeds and n not in feeds[0]]
    if missing:
        raise UsageError(f"calibration data has no {', '.join(missing)} for the model's inputs "
                         f"({', '.join(names)})")
    context.logger.info("calibration: %d batches from %s", len(feeds), data.source)
    return FeedsReader(feeds)
