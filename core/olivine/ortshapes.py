"""ONNX Runtime's symbolic shape inference without copies of a model's weights.

``SymbolicShapeInference`` (onnxruntime's transformer optimizer calls it several times per
fusion, its quantization pre-processing once) copies the whole model, weights included,
when it starts and again on every pass of its loop, although only the weights' shapes are
ever read: on all-MiniLM-L6-v2 (90 MB) one fusion made 14 such copies, a third of its time,
and the optimizer keeps two of them alive until it ends. Inside :func:`lean_shape_inference`
the copies hold the large floating-point weights as shapes alone, and a value the inference
does read is taken from the caller's model, so the inferred shapes and a returned model are
the same as without it (a test compares the bytes). Only inferences that cannot hand a copy
back go lean: the transformer optimizer's ``SymbolicShapeInferenceHelper`` and
``infer_shapes`` as this module replaces it (which puts the data back); any other caller of
the class gets onnxruntime's own full copy. Models with subgraphs (``If``, ``Loop``,
``Scan``), tensors with unknown protobuf fields and duplicate initializer names are copied
whole as well; on onnxruntime versions whose class lacks the methods this relies on, nothing
is patched.

A second difference: when inference is incomplete, onnxruntime's ``infer_shapes`` writes
``sym_shape_infer_temp.onnx`` (and its weights) into the current directory before raising;
inside :func:`lean_shape_inference` it raises the same exception and writes nothing.

``onnxruntime`` is imported when the context is entered, never by importing this module.
Added in API 1.4.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["LEAN_MIN_ELEMENTS", "lean_shape_inference"]

log = logging.getLogger("olivine.ortshapes")

#: Floating-point initializers with at least this many elements are copied as shapes only.
#: Values that shape inference reads (``Resize`` scales, ``Range`` bounds) are far smaller.
LEAN_MIN_ELEMENTS = 1024

#: TensorProto data types whose values never decide a shape: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
_FLOAT_TYPES = frozenset({1, 10, 11, 16})
#: The methods (and the loop flag) of ``SymbolicShapeInference`` this module builds on.
_NEEDED = ("_preprocess", "_infer_impl", "_update_output_from_vi", "infer_shapes")

_lock = threading.RLock()
_depth = 0
_saved: list[tuple[type, str, Any]] = []


def _classes() -> list[type]:
    """The ``SymbolicShapeInference`` classes onnxruntime has loaded (it imports the module twice).

    ``onnxruntime.transformers`` puts ``onnxruntime/tools`` on ``sys.path`` and imports the
    module as ``symbolic_shape_infer``; the quantization tools import
    ``onnxruntime.tools.symbolic_shape_infer``. Both classes are patched.
    """
    found: list[type] = []
    try:
        from onnxruntime.tools import symbolic_shape_infer

        found.append(symbolic_shape_infer.SymbolicShapeInference)
    except ImportError:
        return []
    try:
        from onnxruntime.transformers import shape_infer_helper

        helper_base = shape_infer_helper.SymbolicShapeInferenceHelper.__mro__[1]
        if helper_base not in found:
            found.append(helper_base)
    except (ImportError, AttributeError, IndexError):
        pass
    return [c for c in found if all(hasattr(c, name) for name in _NEEDED)]


def _may_go_lean(inference: Any) -> bool:
    """Whether ``inference``'s copy never leaves it without its data put back: made by the
    replaced ``infer_shapes``, or the transformer optimizer's helper (which only answers shape
    queries). An instance onnxruntime's own ``infer_shapes`` made (a reference taken before
    the patch) is neither, and gets the full copy it returns."""
    if getattr(inference, "_olivine_lean", False):
        return True
    return any(k.__name__ == "SymbolicShapeInferenceHelper"
               and k.__module__.endswith("shape_infer_helper") for k in type(inference).__mro__)


def _has_subgraphs(graph: Any) -> bool:
    return any(attr.type in (5, 10) for node in graph.node for attr in node.attribute)  # GRAPH(S)


def _is_lean(tensor: Any) -> bool:
    if tensor.data_type not in _FLOAT_TYPES or not tensor.HasField("raw_data"):
        return False
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count >= LEAN_MIN_ELEMENTS


def _lean_copy(model: Any) -> tuple[Any, dict[str, Any]] | None:
    """A copy of ``model`` whose large floating-point initializers carry no data.

    Returns the copy and the caller's initializers that were left out, by name (the caller's
    own objects: nothing is copied), or ``None`` when nothing can be left out exactly (no
    large float initializer, duplicate names, unknown protobuf fields): then the caller
    copies the model whole. ``model`` itself is not changed.
    """
    import onnx

    full = {t.name: t for t in model.graph.initializer if _is_lean(t)}
    if not full or len({t.name for t in model.graph.initializer}) != len(model.graph.initializer):
        return None
    if _unknown_fields(model, model.graph, *full.values()):
        return None
    copy = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _set_field(copy, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _set_field(copy.graph, field, value)
    for tensor in model.graph.initializer:
        target = copy.graph.initializer.add()
        if tensor.name in full:
            for field, value in tensor.ListFields():
                if field.name != "raw_data":
                    _set_field(target, field, value)
        else:
            target.CopyFrom(tensor)
    return copy, full


def _unknown_fields(*messages: Any) -> bool:
    """Whether any of ``messages`` carries fields its schema does not know (a copy field by
    field would drop them); ``True`` when this protobuf cannot tell."""
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
    except ImportError:
        return True
    try:
        return any(len(UnknownFieldSet(m)) for m in messages)
    except Exception:
        return True


def _set_field(message: Any, field: Any, value: Any) -> None:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf before 6.31
        repeated = field.label == field.LABEL_REPEATED
    if repeated:
        getattr(message, field.name).extend(value)
    elif field.type == field.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _refill(model: Any, full: dict[str, Any]) -> None:
    """Put the left-out data back into ``model``'s initializers (the bytes they had)."""
    for tensor in model.graph.initializer:
        source = full.get(tensor.name)
        if source is not None and not tensor.HasField("raw_data"):
            tensor.raw_data = source.raw_data


def _patch(cls: type) -> None:
    original_preprocess = cls.__dict__.get("_preprocess") or cls._preprocess  # type: ignore[attr-defined]

    def _preprocess(self: Any, in_mp: Any) -> None:
        self._olivine_full = {}
        made = None
        if _may_go_lean(self) and not _has_subgraphs(in_mp.graph):
            try:
                made = _lean_copy(in_mp)
            except Exception as exc:  # a protobuf this code does not know: onnxruntime's copy
                log.warning("lean shape inference: copying the whole model (%s: %s)",
                            type(exc).__name__, exc)
        if made is None:
            original_preprocess(self, in_mp)
            return
        lean, full = made
        original_preprocess(self, lean)  # copies the lean model: cheap
        self.initializers_.update(full)  # values are read from the caller's tensors
        self._olivine_full = full

    module = sys.modules[cls.__module__]
    get_opset = getattr(module, "get_opset", None)
    module_log = getattr(module, "logger", log)

    def infer_shapes(in_mp: Any, int_max: int = 2**31 - 1, auto_merge: bool = False,
                     guess_output_rank: bool = False, verbose: int = 0) -> Any:
        opset = get_opset(in_mp) if get_opset is not None else None
        if get_opset is not None and (not opset or opset < 7):
            module_log.warning("Only support models of onnx opset 7 and above.")
            return None
        inference = cls(int_max, auto_merge, guess_output_rank, verbose)
        inference._olivine_lean = True  # this function refills the model it returns
        complete = False
        inference._preprocess(in_mp)
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
        if not complete:  # onnxruntime would first save the model into the current directory
            raise Exception("Incomplete symbolic shape inference")
        _refill(inference.out_mp_, getattr(inference, "_olivine_full", {}))
        return inference.out_mp_

    _saved.append((cls, "_preprocess", cls.__dict__.get("_preprocess")))
    _saved.append((cls, "infer_shapes", cls.__dict__.get("infer_shapes")))
    cls._preprocess = _preprocess  # type: ignore[attr-defined]
    cls.infer_shapes = staticmethod(infer_shapes)  # type: ignore[attr-defined]


@contextmanager
def lean_shape_inference() -> Iterator[bool]:
    """Within this block onnxruntime's symbolic shape inference copies no large weights.

    Yields whether it is active (``False`` where this onnxruntime's classes differ from what
    it builds on). Safe to nest and to enter from several threads: the classes are patched
    on the first entry and restored on the last exit, and while they are patched a caller
    outside any block still gets onnxruntime's full copies (only the inferences listed in
    the module's docstring go lean).
    """
    global _depth
    with _lock:
        if _depth == 0:
            try:
                for cls in _classes():
                    _patch(cls)
            except Exception as exc:  # leave onnxruntime as it was
                log.warning("lean shape inference unavailable (%s: %s)", type(exc).__name__, exc)
                _restore()
        _depth += 1
        active = bool(_saved)
    try:
        yield active
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore()


def _restore() -> None:
    for cls, name, value in reversed(_saved):
        if value is None:
            delattr(cls, name)
        else:
            setattr(cls, name, value)
    _saved.clear()
