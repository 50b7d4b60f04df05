"""``OnnxConversion`` of Olive's ``PyTorchModel``: a torch module a user function loads.

The model comes from ``model_loader(model_path)`` in ``model_script`` (a TorchScript file
is loaded with ``torch.jit.load``); the export inputs from ``dummy_inputs_func(model)``,
else random inputs of ``io_config``'s ``input_shapes``/``input_types``; names and dynamic
axes from ``io_config`` (a mapping, or a function in ``model_script`` called with the
model handle). The exported model is run in ONNX Runtime on the same inputs and compared
with torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from olivine import OlivineError, OnnxModel, PassContext, PyTorchModel, UsageError
from olivine.onnxsave import plain_data
from olivine_transformers.conversion import ConversionConfig


class PositionalWrapper(torch.nn.Module):
    """Calls ``model`` with the export inputs (positional, or keywords by name) and flattens
    its outputs (a tensor, a sequence, or a mapping of tensors, nested) into a tuple."""

    def __init__(self, model: torch.nn.Module, keywords: Sequence[str] | None) -> None:
        super().__init__()
        self.model = model
        self.keywords = list(keywords) if keywords is not None else None

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        """Run the model and flatten its outputs."""
        if self.keywords is not None:
            out = self.model(**dict(zip(self.keywords, args, strict=True)))
        else:
            out = self.model(*args)
        return tuple(flatten(out))


def flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output, in order (mappings by their own order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping) or hasattr(out, "to_tuple"):
        values = out.values() if isinstance(out, Mapping) else out.to_tuple()
        return [t for v in values for t in flatten(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in flatten(v)]
    return []


def _module(model: PyTorchModel) -> Any:
    from olivine import load_module

    if model.model_script is None:
        raise UsageError("input_model.model_script: required for model_loader, "
                         "dummy_inputs_func and io_config functions")
    return load_module(model.model_script, model.script_dir, "input_model.model_script")


def _call(model: PyTorchModel, name: str, key: str, *args: Any) -> Any:
    from olivine import call_object

    fn = call_object(_module(model), name, f"input_model.{key}")
    try:
        return fn(*args)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"input_model.{key}: {name}() failed: {type(exc).__name__}: {exc}") from exc


def load_torch_model(model: PyTorchModel) -> torch.nn.Module:
    """The module ``model_loader`` returns (or the TorchScript file), in eval mode."""
    if model.model_loader:
        loaded = _call(model, model.model_loader, "model_loader", model.model_path)
    else:
        loaded = torch.jit.load(model.path)
    if not isinstance(loaded, torch.nn.Module):
        raise UsageError(f"input_model.model_loader: {model.model_loader}() returned "
                         f"{type(loaded).__name__}, not a torch.nn.Module")
    return loaded.eval()


def resolved_io_config(model: PyTorchModel, config: ConversionConfig) -> dict[str, Any]:
    """The pass's ``io_config``, else the model's (calling it when it names a function)."""
    if config.io_config:
        return dict(config.io_config)
    io = model.io_config_dict()
    if isinstance(io, str):
        io = _call(model, io, "io_config", model)
        if not isinstance(io, Mapping):
            raise UsageError(f"input_model.io_config: {model.io_config}() returned "
                             f"{type(io).__name__}, not a mapping")
        from olivine.config import IO_CONFIG_KEYS

        unknown = sorted(set(io) - set(IO_CONFIG_KEYS))
        if unknown:
            raise UsageError(f"input_model.io_config: {model.io_config}() returned unknown key "
                             f"{unknown[0]!r}; expected some of {', '.join(IO_CONFIG_KEYS)}")
    return plain_data(io or {})



def dummy_inputs(model: PyTorchModel, io: Mapping[str, Any]) -> tuple[tuple[Any, ...], list[str] | None]:
    """(positional inputs, keyword names or ``None``) for the export."""
    if model.dummy_inputs_func:
        got = _call(model, model.dummy_inputs_func, "dummy_inputs_func", model)
        if isinstance(got, Mapping):
            names = list(got)
            return tuple(got[n] for n in names), names
        if isinstance(got, torch.Tensor):
            return (got,), None
        if isinstance(got, list | tuple):
            return tuple(got), None
        raise UsageError(f"input_model.dummy_inputs_func: {model.dummy_inputs_func}() returned "
                         f"{type(got).__name__}; expected a tensor, a tuple/list or a dict of them")
    from olivine_transformers._export import io_config_inputs

    if not io.get("input_shapes"):
        raise UsageError("input_model: give dummy_inputs_func, or io_config.input_shapes (and "
                         "input_types), to make the export's sample inputs")
    return tuple(io_config_inputs(dict(io), seed=0).values()), None


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Float tensors in ``value`` (nested in lists, tuples, dicts) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _tensors(args: Sequence[Any]) -> list[torch.Tensor]:
    return [t for a in args for t in flatten(a)]


def convert_pytorch(model: PyTorchModel, config: ConversionConfig, context: PassContext) -> OnnxModel:
    """Export ``model`` into ``context.work_dir``; validate against torch; return the handle."""
    from olivine_transformers._export import _export, cpu_session, resolve_dtype, save_exported, to_numpy

    if config.model_loader or config.model_script:
        raise UsageError("OnnxConversion: model_script/model_loader are given by the "
                         "PyTorchModel input; leave them out of the pass")
    context.progress(0, 5, f"loading {model.model_loader or model.path}")
    torch_model = load_torch_model(model)
    io = resolved_io_config(model, config)
    for key in ("string_to_int_dim_params",):
        if io.get(key):
            raise UsageError(f"io_config.{key} is not supported by olivine's export")
    if io.get("kv_cache"):
        raise UsageError("io_config.kv_cache needs a transformers causal LM (HfModel); a "
                         "PyTorchModel names its past inputs in io_config.input_names")
    args, keywords = dummy_inputs(model, io)
    dtype = resolve_dtype(config)
    if dtype is not None:  # as Olive: the module and the float sample inputs in torch_dtype
        torch_model = torch_model.to(dtype)
        args = tuple(_cast(a, dtype) for a in args)
    wrapper = PositionalWrapper(torch_model, keywords).eval()
    context.progress(1, 5, "running torch on the sample inputs")
    with torch.no_grad():
        reference = [to_numpy(t) for t in wrapper(*args)]
    graph_inputs = _tensors(args)
    input_names = list(io.get("input_names") or keywords or
                       [f"input_{i}" for i in range(len(graph_inputs))])
    output_names = list(io.get("output_names") or [f"output_{i}" for i in range(len(reference))])
    if len(output_names) != len(reference):
        raise UsageError(f"io_config.output_names: {len(output_names)} names, but the model "
                         f"returns {len(reference)} tensors")
    _check_declared(io, output_names, reference)
    dynamic_axes = {k: {int(a): str(n) for a, n in dict(v).items()}
                    for k, v in (io.get("dynamic_axes") or {}).items() if v}
    if not config.dynamic:  # Olive drops io_config's dynamic axes and shapes
        dynamic_axes = {}
    elif io.get("dynamic_shapes") and not config.use_dynamo_exporter:
        raise UsageError("io_config.dynamic_shapes is for the dynamo exporter; set "
                         "use_dynamo_exporter: true, or give dynamic_axes")
    elif io.get("dynamic_shapes"):
        dynamic_axes = {**shapes_as_axes(io["dynamic_shapes"], input_names), **dynamic_axes}
    exporter = "dynamo" if config.use_dynamo_exporter else "torchscript"
    context.progress(2, 5, f"exporting with the {exporter} exporter (opset {config.target_opset})")
    sample = dict(zip([f"arg{i}" for i in range(len(args))], args, strict=True))
    proto = _export(wrapper, sample, input_names, output_names, dynamic_axes, config,
                    model.model_loader or model.path)
    target = save_exported(proto, context.work_dir, config)
    del proto
    diffs: dict[str, float] = {}
    if config.validate:
        context.progress(3, 5, "validating ONNX Runtime outputs against torch")
        diffs = _validate(cpu_session(target), input_names, graph_inputs, output_names,
                          reference, config)
    context.progress(5, 5, "done")
    attributes = {"exporter": exporter, "opset": config.target_opset, "input_names": input_names,
                  "output_names": output_names, "validation_max_abs_diff": diffs}
    return OnnxModel(path=str(context.work_dir), onnx_file_name=target.name,
                     attributes={**model.attrs_dict(), **attributes})


def shapes_as_axes(shapes: Any, input_names: list[str]) -> dict[str, dict[int, str]]:
    """Olive's ``io_config.dynamic_shapes`` of flat tensor inputs (``{name: {axis: label}}`` or
    a list in input order) as dynamic axes; the export gives each one a ``Dim.AUTO``."""
    items = list(shapes.items()) if isinstance(shapes, Mapping) else \
        list(zip(input_names, shapes, strict=False)) if isinstance(shapes, list | tuple) else None
    out: dict[str, dict[int, str]] = {}
    for name, axes in items or [(None, None)]:
        if axes is None and name is not None:
            continue
        if not isinstance(axes, Mapping) or not all(str(a).isdigit() for a in axes):
            raise UsageError("io_config.dynamic_shapes: olivine takes one {axis: name} mapping per "
                             "tensor input (by input name or in input order); nested shapes "
                             "(past_key_values lists) are not supported: give dynamic_axes")
        out[str(name)] = {int(a): str(label) for a, label in axes.items()}
    return out


def _check_declared(io: Mapping[str, Any], names: list[str], reference: list[np.ndarray]) -> None:
    """``output_shapes``/``output_types``, when given, must be what torch returns."""
    shapes, types = io.get("output_shapes"), io.get("output_types")
    for i, (name, value) in enumerate(zip(names, reference, strict=True)):
        if shapes and i < len(shapes) and list(shapes[i]) != list(value.shape):
            raise UsageError(f"io_config.output_shapes: {name!r} is {list(value.shape)} in torch, "
                             f"not {list(shapes[i])}")
        if types and i < len(types) and str(np.dtype(str(types[i]))) != str(value.dtype):
            raise UsageError(f"io_config.output_types: {name!r} is {value.dtype} in torch, "
                             f"not {types[i]}")


def _validate(session: Any, input_names: list[str], inputs: list[torch.Tensor],
              output_names: list[str], reference: list[np.ndarray],
              config: ConversionConfig) -> dict[str, float]:
    from olivine_transformers._export import compare_outputs, to_numpy

    graph = [i.name for i in session.get_inputs()]
    feeds = {n: to_numpy(t) for n, t in zip(input_names, inputs, strict=False) if n in graph}
    try:
        outputs = session.run(output_names, feeds)
    except Exception as exc:
        raise OlivineError(f"the exported model does not run in ONNX Runtime: "
                           f"{type(exc).__name__}: {exc}") from exc
    return compare_outputs(output_names, outputs, reference, config)
