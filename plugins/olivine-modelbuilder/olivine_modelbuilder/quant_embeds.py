"""Quantized input embeddings: the builder's ``Gather`` becomes ``GatherBlockQuantized``.

Olive's ``Rtn`` with ``embeds: true`` quantizes the embedding table, and Olive's
``ModelBuilder`` writes it as ``GatherBlockQuantized``. olivine's ``Rtn`` stores the table
dequantized in float32 (exactly ``(q - zero) * scale``; the genai builder's loader reads
only float embeddings) with its float16 scales and uint8 zero points beside it, and
records ``quantization_config.olivine.embeds``. After the build, this module recovers
``q = round(w / scale) + zero`` exactly from those tensors and rewrites the graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olivine import OlivineError

MS_DOMAIN = "com.microsoft"


def embeds_settings(hf_folder: str | Path) -> dict[str, Any] | None:
    """``{module, bits, group_size, sym}`` when the input's embeddings are quantized, else ``None``."""
    path = Path(hf_folder) / "config.json"
    if not path.is_file():
        return None
    qc = json.loads(path.read_text(encoding="utf-8")).get("quantization_config") or {}
    found = (qc.get("olivine") or {}).get("embeds") if isinstance(qc, dict) else None
    return dict(found) if isinstance(found, dict) else None


def _tensor(folder: Path, name: str) -> Any:
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as fh:
            if name in fh.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                return fh.get_tensor(name)
    raise OlivineError(f"{folder}: quantized embeddings are recorded, but {name} is missing")


def _pack(values: Any, bits: int) -> Any:
    """Pack the last dim of a uint8 array ``bits`` at a time, low bits first."""
    import numpy as np

    if bits == 8:
        return values.astype(np.uint8)
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], 1), np.uint8)], axis=-1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def quantize_gather(model_file: Path, hf_folder: str | Path, settings: dict[str, Any]) -> int:
    """Rewrite the Gather on the embedding table of ``model_file``; return how many were rewritten."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    folder = Path(hf_folder)
    module, bits = str(settings["module"]), int(settings["bits"])
    group, sym = int(settings["group_size"]), bool(settings["sym"])
    weight = _tensor(folder, f"{module}.weight").astype(np.float32)
    scales = _tensor(folder, f"{module}.scales").astype(np.float32)
    zeros = _tensor(folder, f"{module}.qzeros").astype(np.float32)
    vocab, hidden = weight.shape
    expanded_s = np.repeat(scales, group, axis=1)[:, :hidden]
    expanded_z = np.repeat(zeros, group, axis=1)[:, :hidden]
    q = np.clip(np.rint(weight / expanded_s) + expanded_z, 0, (1 << bits) - 1).astype(np.uint8)
    proto = onnx.load(str(model_file))
    inits = {t.name: t for t in proto.graph.initializer}
    users: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done = 0
    for node in proto.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        if table is None or tuple(table.dims) != (vocab, hidden):
            continue
        dtype = numpy_helper.to_array(table).dtype
        base = node.input[0]
        extra = [numpy_helper.from_array(_pack(q, bits), f"{base}_Q{bits}"),
                 numpy_helper.from_array(scales.astype(dtype), f"{base}_scales")]
        if not sym:
            extra.append(numpy_helper.from_array(_pack(zeros.astype(np.uint8), bits), f"{base}_zero_points"))
        proto.graph.initializer.extend(extra)
        new = helper.make_node("GatherBlockQuantized", [extra[0].name, node.input[1],
                                                        *[t.name for t in extra[1:]]],
                               list(node.output), name=f"{node.name}_Q{bits}" if node.name else "",
                               domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                               block_size=group, bits=bits)
        node.CopyFrom(new)
        if users.get(base, 0) == 1:
            proto.graph.initializer.remove(table)
        done += 1
    if done:
        if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        data = model_file.with_name(model_file.name + ".data")
        if data.exists():
            data.unlink()
        onnx.save_model(proto, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    return done
