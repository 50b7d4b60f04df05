"""LoRA weights as inputs of an onnxruntime-genai model, and ``.onnx_adapter`` files for them.

onnxruntime-genai's model builder, given a peft adapter, writes each adapted projection
as ``MatMul(x, W) + MatMul(MatMul(x, A), B)`` with ``A`` and ``B`` as initializers named
``model.layers.N.attn.q_proj.lora_A.MatMul.weight`` (``lora_B``; ``mlp.gate_proj``, ...)
and ``B`` already multiplied by the adapter's scaling. :func:`extract_adapters` turns
those initializers into graph inputs whose default is an empty rank-0 matrix (so without
an adapter the model is the base model) and writes their values into an adapter file.
onnxruntime-genai's ``Adapters`` load such files and feed them at run time.

:func:`convert_peft_adapter` writes any peft adapter for the same base as such a file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine import UsageError
from olivine_lora.adapters import PeftAdapter

_LORA_NODE = re.compile(r"/lora_([AB])/")
_LORA_INPUT = re.compile(r"\.lora_([AB])\.")
_QUANT_SUFFIX = re.compile(r"_Q\d+$")


@attrs.frozen
class LoraInput:
    """A LoRA weight input of an ONNX model: its name, A or B, fixed size and element type."""

    name: str
    part: str  # "A" ([in, r]) or "B" ([r, out])
    size: int | None  # in_features for A, out_features for B
    elem_type: int

    def numpy_dtype(self) -> Any:
        """The numpy dtype of the input."""
        from onnx import helper

        return helper.tensor_dtype_to_np_dtype(self.elem_type)


def _dequantize_nbits(node: Any, inits: Mapping[str, Any]) -> Any:
    """The float ``[K, N]`` weight of a MatMulNBits node (4 or 8 bits, optional zero points)."""
    import numpy as np
    from onnx import helper, numpy_helper

    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = int(at["K"]), int(at["N"]), int(at.get("bits", 4)), int(at["block_size"])
    packed = numpy_helper.to_array(inits[node.input[1]]).astype(np.uint8)
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    blocks = (k + block - 1) // block
    packed = packed.reshape(n, blocks, -1)
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)[..., :block]
    elif bits == 8:
        q = packed[..., :block]
    else:
        raise UsageError(f"{node.name}: {bits}-bit MatMulNBits weights are not supported")
    zero: Any = np.full((n, blocks), 2 ** (bits - 1), np.float32)
    if len(node.input) > 3 and node.input[3]:
        zp = numpy_helper.to_array(inits[node.input[3]])
        if zp.dtype == np.uint8 and bits == 4:
            zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)[:, :blocks]
        zero = zp.reshape(n, blocks).astype(np.float32)
    w = (q.astype(np.float32) - zero[..., None]) * scales.reshape(n, blocks)[..., None]
    return w.reshape(n, blocks * block)[:, :k].T.copy()


@attrs.frozen
class Extracted:
    """What :func:`extract_adapters` did."""

    weights: dict[str, Any]
    inputs: list[LoraInput]
    dequantized: int


def extract_adapters(model_file: Path, out_dir: Path, dynamic_rank: bool = True,
                     optional: bool = True, save_options: Any = None) -> Extracted:
    """Copy the model folder of ``model_file`` into ``out_dir`` with its LoRA weights as inputs.

    ``optional``: each input gets an empty default (rank 0), so the model runs without an
    adapter. ``save_options``: :class:`olivine.onnxsave.ExternalDataOptions` for the model file.
    Returns the weights found (float; dequantized where the builder quantized them).
    Raises :class:`UsageError` when the model has no LoRA MatMuls.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(model_file), load_external_data=True)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    weights: dict[str, Any] = {}
    inputs: list[LoraInput] = []
    drop: set[str] = set()
    dequantized = 0
    new_nodes = []
    for node in graph.node:
        m = _LORA_NODE.search(node.name)
        if not m or node.op_type not in ("MatMul", "MatMulNBits") or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        part = m[1]
        if node.op_type == "MatMul":
            name = node.input[1]
            tensor = inits[name]
            value, elem = numpy_helper.to_array(tensor), tensor.data_type
            new_nodes.append(node)
        else:
            name = _QUANT_SUFFIX.sub("", node.input[1])
            elem = inits[node.input[2]].data_type
            value = _dequantize_nbits(node, inits).astype(helper.tensor_dtype_to_np_dtype(elem))
            drop.update(i for i in node.input[1:] if i)
            dequantized += 1
            new_nodes.append(helper.make_node("MatMul", [node.input[0], name], list(node.output),
                                              name=_QUANT_SUFFIX.sub("", node.name)))
        drop.add(name)
        size = int(value.shape[0] if part == "A" else value.shape[1])
        weights[name] = value
        inputs.append(LoraInput(name, part, size, elem))
    if not inputs:
        raise UsageError(f"{model_file} has no LoRA weights to extract: build it from a model with "
                         "an adapter (input_model.adapter_path, or a LoRA step before ModelBuilder)")
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [t for t in graph.initializer if t.name not in drop]
    for item in inputs:
        value = weights[item.name]
        free = None if dynamic_rank else int(value.shape[1 if item.part == "A" else 0])
        shape = [item.size, free] if item.part == "A" else [free, item.size]
        graph.input.append(helper.make_tensor_value_info(item.name, item.elem_type, shape))
        if not optional:
            continue  # Olive's optional_inputs: false: the caller must feed every LoRA input
        # the default is an empty matrix (rank 0): without an adapter, the LoRA path adds zeros
        empty = (int(value.shape[0]), 0) if item.part == "A" else (0, int(value.shape[1]))
        default = np.zeros(empty if dynamic_rank else value.shape, dtype=item.numpy_dtype())
        kept.append(numpy_helper.from_array(default, item.name))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if proto.ir_version < 4:
        proto.ir_version = 4  # initializers that are also inputs are defaults from IR 4 on
    source = model_file.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    data_names = _external_names(model_file)
    for f in source.iterdir():
        if f.is_file() and f != model_file and f.name not in data_names:
            shutil.copy2(f, out_dir / f.name)
    from olivine.onnxsave import save_onnx

    save_onnx(proto, out_dir, save_options, file_name=model_file.name)
    return Extracted(weights, inputs, dequantized)


#: Weight names of adapters that are not LoRA pairs, as peft names them (and torch's exporters
#: keep them in initializer names).
ADAPTER_WEIGHT_MARKS = {"dora": ("lora_magnitude_vector",),
                        "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}


def adapter_weight_names(model_file: Path, adapter_type: str) -> list[str]:
    """Initializers and inputs of ``model_file`` named as ``adapter_type`` weights (DoRA, LoHa)."""
    import onnx

    proto = onnx.load(str(model_file), load_external_data=False)
    marks = ADAPTER_WEIGHT_MARKS[adapter_type]
    names = [t.name for t in proto.graph.initializer] + [v.name for v in proto.graph.input]
    return [n for n in names if any(m in n for m in marks)]


def _external_names(model_file: Path) -> set[str]:
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    proto = onnx.load(str(model_file), load_external_data=False)
    return {ExternalDataInfo(t).location for t in _get_all_tensors(proto)
            if t.data_location == onnx.TensorProto.EXTERNAL}


def lora_inputs(model_file: Path) -> dict[str, LoraInput]:
    """The LoRA weight inputs of an ONNX model (``{}`` for a model without them)."""
    import onnx

    proto = onnx.load(str(model_file), load_external_data=False)
    out = {}
    for value in proto.graph.input:
        m = _LORA_INPUT.search(value.name)
        if not m:
            continue
        dims = value.type.tensor_type.shape.dim
        fixed = dims[0] if m[1] == "A" else dims[1]
        size = int(fixed.dim_value) if fixed.HasField("dim_value") else None
        out[value.name] = LoraInput(value.name, m[1], size, value.type.tensor_type.elem_type)
    return out


def model_file_of(folder: str | Path) -> Path:
    """The ``.onnx`` file of an onnxruntime-genai model folder (or the file itself)."""
    p = Path(folder).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise UsageError(f"model {str(folder)!r}: no such folder")
    config = p / "genai_config.json"
    if config.is_file():
        import json

        name = json.loads(config.read_text()).get("model", {}).get("decoder", {}).get("filename")
        if name and (p / name).is_file():
            return p / name
    found = sorted(p.glob("*.onnx"))
    if len(found) != 1:
        raise UsageError(f"model folder {str(folder)!r} holds {len(found)} .onnx files; give one")
    return found[0]


# -- peft adapters -> adapter files ----------------------------------------------------------
def onnx_name(module: str, part: str) -> str:
    """The builder's name of a LoRA weight: ``model.layers.0.self_attn.q_proj`` ->
    ``model.layers.0.attn.q_proj.lora_A.MatMul.weight``."""
    return f"{module.replace('.self_attn.', '.attn.')}.lora_{part}.MatMul.weight"


def _find_input(module: str, part: str, inputs: Mapping[str, LoraInput]) -> str | None:
    name = onnx_name(module, part)
    if name in inputs:
        return name
    layer = re.search(r"layers\.(\d+)\.", module)
    leaf = module.rsplit(".", 1)[-1]
    hits = [n for n in inputs if inputs[n].part == part and n.endswith(f".{leaf}.lora_{part}.MatMul.weight")
            and (layer is None or f"layers.{layer[1]}." in n)]
    return hits[0] if len(hits) == 1 else None


def convert_peft_adapter(adapter: PeftAdapter, inputs: Mapping[str, LoraInput] | None = None,
                         dtype: str | None = None) -> dict[str, Any]:
    """The ``{input name: array}`` of an adapter file for ``adapter``.

    ``A`` is stored as ``[in, r]``, ``B`` as ``[r, out]`` times peft's scaling, as the
    builder lays them out. With ``inputs`` (the target model's LoRA inputs) every name and
    size is checked, and a mismatch raises :class:`UsageError`.
    """
    import numpy as np

    reasons = adapter.unsupported_for_onnx()
    if reasons:
        raise UsageError(f"adapter {adapter.folder} cannot be converted to an onnxruntime-genai "
                         f"adapter: {'; '.join(reasons)}; merge it instead (MergeAdapterWeights)")
    pairs = adapter.lora_pairs()
    if not pairs:
        raise UsageError(f"adapter {adapter.folder} holds no LoRA weights")
    named = f" (its adapter_config.json names base {adapter.base_name!r})" if adapter.base_name else ""
    params: dict[str, Any] = {}
    problems: list[str] = []
    for mod in adapter.modules():
        key_a, key_b = pairs[mod.module]
        a = np.asarray(adapter.tensors[key_a], dtype=np.float32).T
        b = np.asarray(adapter.tensors[key_b], dtype=np.float32).T * mod.scaling
        for part, value in (("A", a), ("B", b)):
            name = _find_input(mod.module, part, inputs) if inputs is not None else \
                onnx_name(mod.module, part)
            if name is None:
                problems.append(f"{mod.module} has no LoRA input in the model")
                break
            want = inputs[name] if inputs is not None else None
            size = int(value.shape[0] if part == "A" else value.shape[1])
            if want is not None and want.size is not None and want.size != size:
                side = "in" if part == "A" else "out"
                problems.append(f"{mod.module} has {size} {side}-features in the adapter but "
                                f"{want.size} in the model")
                break
            np_dtype = want.numpy_dtype() if want is not None else np.dtype(dtype or "float32")
            params[name] = np.ascontiguousarray(value.astype(np_dtype))
    if problems:
        names = sorted(inputs or {})
        have = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UsageError(f"adapter {adapter.folder} does not fit the model: it was trained for a "
                         f"different base model{named}, or for other modules: "
                         + "; ".join(problems[:3]) + more
                         + (f". The model's LoRA inputs: {have}" if inputs else ""))
    return params


def write_adapter_file(params: Mapping[str, Any], path: Path) -> Path:
    """Write ``params`` as an ``.onnx_adapter`` file (onnxruntime's adapter format)."""
    import onnxruntime as ort

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    fmt.export_adapter(str(path))
    return path


def read_adapter_file(path: str | Path) -> dict[str, Any]:
    """The parameters of an ``.onnx_adapter`` file as numpy arrays."""
    import numpy as np
    import onnxruntime as ort

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"adapter file {str(path)!r}: no such file")
    try:
        fmt = ort.AdapterFormat.read_adapter(str(p))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise UsageError(f"{str(path)!r} is not an onnxruntime adapter file: {exc}") from None
    values = fmt.get_parameters()  # zero-copy views: copy while they are alive
    out = {k: np.array(v.numpy(), copy=True) for k, v in values.items()}
    del values, fmt
    return out


def check_adapter_file(model_folder: str | Path, adapter_file: str | Path) -> int:
    """Raise :class:`UsageError` unless every parameter of the file is a LoRA input of the model
    with matching sizes and type; return how many parameters it holds."""
    model_file = model_file_of(model_folder)
    inputs = lora_inputs(model_file)
    if not inputs:
        raise UsageError(f"model {str(model_folder)!r} has no LoRA inputs, so it cannot load "
                         "adapters; export it with them (`olivine generate-adapter`, or "
                         "ExtractAdapters after ModelBuilder)")
    params = read_adapter_file(adapter_file)
    problems = []
    for name, value in params.items():
        want = inputs.get(name)
        if want is None:
            problems.append(f"{name} is not an input of the model")
            continue
        size = value.shape[0] if want.part == "A" else value.shape[1]
        if value.ndim != 2 or (want.size is not None and size != want.size):
            takes = f"[{want.size}, r]" if want.part == "A" else f"[r, {want.size}]"
            problems.append(f"{name} is {list(value.shape)} but the model takes {takes}")
        elif value.dtype != want.numpy_dtype():
            problems.append(f"{name} is {value.dtype} but the model takes {want.numpy_dtype()}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UsageError(f"adapter file {str(adapter_file)!r} does not fit model "
                         f"{str(model_folder)!r}; it was made for a different base model: "
                         + "; ".join(problems[:3]) + more)
    return len(params)
