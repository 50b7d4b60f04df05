"""A scratch file for quantized tensors waiting to be saved (see :class:`Spill`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

#: Quantized bytes kept in memory before the rest go to the spill file (when there is one):
#: a 0.5B model's ~320 MB stays in memory, a 7B model's ~4 GB mostly goes to disk.
SPILL_AFTER_BYTES = 512 * 2**20
#: Bytes copied at a time from the spill file into the saved external data.
SPILL_COPY_BYTES = 16 * 2**20


class Spill:
    """An append-only scratch file holding quantized tensors until the builder saves them.

    The quantized weights of a 7B model are about 4 GB; held as arrays until the builder's
    ``ir.save`` they are most of the step's peak memory. Past :data:`SPILL_AFTER_BYTES`
    each new tensor is written here at once and stands in the graph as a lazy tensor
    whose ``tofile`` copies its bytes back with plain reads (page cache, not the
    process's memory). The file is created exclusively (never an existing file) in the
    step's own output folder and removed by :meth:`close`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / f".olivine-quantized-{os.getpid()}-{id(self):x}.spill"
        self._file: Any = None  # opened at the first spilled tensor
        self._offset = 0
        self.kept = 0  # bytes left in memory

    def hold(self, array: Any) -> Any:
        """``array`` as an ``ir`` tensor: in memory within the budget, else spilled."""
        import numpy as np
        import onnx_ir as ir

        if self.kept + array.nbytes <= SPILL_AFTER_BYTES:
            self.kept += array.nbytes
            return ir.Tensor(array)
        data = np.ascontiguousarray(array)
        if self._file is None:
            self._file = self.path.open("xb")
        self._file.write(data.reshape(-1).view(np.uint8).data)
        self._file.flush()
        offset, self._offset = self._offset, self._offset + data.nbytes
        return _spilled_tensor_class()(self.path, offset, data.dtype, data.shape,
                                       ir.DataType.from_numpy(data.dtype), ir.Shape(data.shape))

    def close(self) -> None:
        """Close and remove the spill file (what it held is no longer readable)."""
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
            self._file = None


def _read_spilled(path: Path, offset: int, dtype: Any, shape: tuple[int, ...]) -> Any:
    """A spilled tensor's array, read back from its file."""
    import numpy as np
    import onnx_ir as ir

    count = int(np.prod(shape, dtype=np.int64))
    array = np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(shape)
    return ir.Tensor(array)


@functools.cache
def _spilled_tensor_class() -> Any:
    """The lazy tensor class of :class:`Spill` (made on first use: onnx_ir loads late)."""
    import onnx_ir as ir

    class SpilledTensor(ir.LazyTensor):
        """A quantized tensor in the spill file; ``tofile`` copies it in blocks."""

        __slots__ = ("_where",)

        def __init__(self, path: Path, offset: int, np_dtype: Any, np_shape: tuple[int, ...],
                     dtype: Any, shape: Any) -> None:
            super().__init__(functools.partial(_read_spilled, path, offset, np_dtype, np_shape),
                             dtype=dtype, shape=shape)
            self._where = (path, offset)

        def tofile(self, file: Any) -> None:
            path, offset = self._where
            left = self.nbytes
            with path.open("rb") as source:
                fd = source.fileno()
                while left > 0:
                    block = os.pread(fd, min(left, SPILL_COPY_BYTES), offset)
                    if not block:
                        raise OSError(f"{path} ended {left} bytes early")
                    file.write(block)
                    offset += len(block)
                    left -= len(block)

    return SpilledTensor
