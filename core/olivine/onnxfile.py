"""The external-data locations an ``.onnx`` file names, read without importing onnx.

Importing onnx takes seconds on some machines; validating a workflow only needs the
``location`` entries of the file's external tensors. This reads the protobuf wire
format directly, following only the fields that can hold tensors (the same tensors
``onnx.external_data_helper`` visits: initializers, sparse initializers, node
attributes, subgraphs and functions). Large inline weights are skipped by length
through a memory map, never copied.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# field numbers of onnx.proto3 messages, by message: {field: message kind it holds}
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_SCHEMA = {"model": _MODEL, "training": _TRAINING, "function": _FUNCTION, "graph": _GRAPH,
           "node": _NODE, "attribute": _ATTRIBUTE, "sparse": _SPARSE}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
_MAX_DEPTH = 64


class NotAnOnnxFile(ValueError):
    """The file is not a well-formed ONNX protobuf."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise NotAnOnnxFile("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """``(field, wire type, value or (start, end))`` of one message's fields."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise NotAnOnnxFile("truncated field")
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise NotAnOnnxFile(f"unexpected wire type {wire}")
        if pos > end:
            raise NotAnOnnxFile("truncated field")


def _tensor_location(buf: memoryview, start: int, end: int) -> str | None:
    location, external = None, False
    for field, wire, value in _fields(buf, start, end):
        if field == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif field == _TENSOR_EXTERNAL_DATA and wire == 2:
            key, text = None, None
            for f, w, v in _fields(buf, value[0], value[1]):
                if w == 2 and f in (1, 2):
                    s = bytes(buf[v[0]:v[1]]).decode("utf-8", "surrogateescape")
                    key, text = (s, text) if f == 1 else (key, s)
            if key == "location":
                location = text
    return location if external else None


def _walk(buf: memoryview, kind: str, start: int, end: int, out: set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise NotAnOnnxFile("nested too deeply")
    schema = _SCHEMA[kind]
    for field, wire, value in _fields(buf, start, end):
        inner = schema.get(field)
        if inner is None or wire != 2:
            continue
        if inner == "tensor":
            location = _tensor_location(buf, value[0], value[1])
            if location is not None:
                out.add(location)
        else:
            _walk(buf, inner, value[0], value[1], out, depth + 1)


def external_data_locations(model_file: Path) -> list[str]:
    """The ``location`` of every external-data tensor of ``model_file``, as written in it.

    Raises :class:`NotAnOnnxFile` when the file is not a well-formed ONNX model.
    """
    with model_file.open("rb") as fh:
        if model_file.stat().st_size == 0:
            raise NotAnOnnxFile("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            buf = memoryview(mapped)
            try:
                found: set[str] = set()
                _walk(buf, "model", 0, len(buf), found, 0)
            finally:
                buf.release()
    return sorted(found)
