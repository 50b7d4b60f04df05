"""The work of ``OnnxConversion``: load, export with torch.onnx, validate with ONNX Runtime.

Facts this module is built on (measured with torch 2.13, transformers 5.24, ORT 1.32):

* transformers 5 reordered ``BertModel.forward``'s positional arguments, so the
  exporter's positional inputs are bound by keyword through :class:`KeywordWrapper`.
* ONNX Runtime's attention fusion recognizes the TorchScript exporter's graph of
  *eager* attention only, so the model is loaded with ``attn_implementation="eager"``.
* The sample inputs carry padding: a trace without padding may drop the mask logic.
* Reference outputs are computed before the export, which runs the model under a tracer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from olivine import (
    AdapterModel,
    HfModel,
    ModelHandle,
    OlivineError,
    OnnxModel,
    PassContext,
    PyTorchModel,
    UsageError,
)
from olivine.onnxsave import plain_data
from olivine_transformers._adapters import adapter_as_hf, exportable_kron, with_adapter
from olivine_transformers.conversion import ConversionConfig

log = logging.getLogger("olivine.pass.OnnxConversion")

#: Inputs a transformers text model may take, in the order they are exported.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Output fields that are never exported (they are optional extras or caches).
SKIPPED_OUTPUTS = ("hidden_states", "attentions", "cross_attentions", "past_key_values")
#: Tasks whose sample input is an image (``pixel_values``), not text.
IMAGE_TASKS = ("image-classification",)
EXPORT_SHAPE = (2, 7)
VALIDATION_SHAPE = (3, 11)


class KeywordWrapper(torch.nn.Module):
    """Calls ``model`` with keyword inputs and returns the chosen output fields as a tuple."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str],
                 output_fields: Sequence[str] | None, extra_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_fields = list(output_fields) if output_fields is not None else None
        self.extra_kwargs = dict(extra_kwargs)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Bind ``args`` to the input names and select outputs."""
        out = self.model(**dict(zip(self.input_names, args, strict=True)), **self.extra_kwargs)
        if self.output_fields is None:  # a plain torch module
            return tuple(out) if isinstance(out, list | tuple) else (out,)
        return tuple(out[name] for name in self.output_fields)


# -- loading --------------------------------------------------------------------------------
def auto_class(task: str) -> Any:
    """The transformers Auto class for ``task``."""
    import transformers

    names = {
        "feature-extraction": "AutoModel",
        "text-classification": "AutoModelForSequenceClassification",
        "sequence-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
        "fill-mask": "AutoModelForMaskedLM",
        "question-answering": "AutoModelForQuestionAnswering",
        "text-generation": "AutoModelForCausalLM",
        "text-generation-with-past": "AutoModelForCausalLM",
        "image-classification": "AutoModelForImageClassification",
        "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    }
    if task not in names:
        raise UsageError(f"OnnxConversion: task {task!r} is not supported; supported tasks: "
                         f"{', '.join(names)}")
    return getattr(transformers, names[task])


def resolve_dtype(config: ConversionConfig) -> torch.dtype | None:
    """``torch_dtype`` as a torch dtype (validated by the config), or ``None``."""
    if not config.torch_dtype:
        return None
    dtype = getattr(torch, config.torch_dtype.removeprefix("torch."))
    assert isinstance(dtype, torch.dtype)
    return dtype


def resolve_device(config: ConversionConfig) -> torch.device:
    """``device`` as a torch device; a device this machine's torch cannot use is an error."""
    device = torch.device(config.device or "cpu")
    if device.type == "cpu":
        return device
    backend: Any = getattr(torch, device.type, None)
    available = bool(backend is not None and hasattr(backend, "is_available")
                     and backend.is_available())
    if available and device.index is not None and hasattr(backend, "device_count"):
        available = device.index < backend.device_count()
    if not available:
        raise UsageError(f"OnnxConversion: device {config.device!r}: torch sees no such device on "
                         f"this machine (torch {torch.__version__}); use device: cpu, or run "
                         "where that device is")
    return device


def load_hf_model(handle: HfModel, config: ConversionConfig) -> torch.nn.Module:
    """Load a transformers model for export (eval mode, no KV cache), with its LoRA adapter
    merged or kept as Olive does (``merge_adapter_weights``)."""
    kwargs = handle.load_options()
    if config.attn_implementation:
        kwargs.setdefault("attn_implementation", config.attn_implementation)
    dtype = resolve_dtype(config)
    if dtype is not None:
        kwargs.pop("torch_dtype", None)
        kwargs["dtype"] = dtype
    cls = auto_class(handle.task)
    try:
        model = cls.from_pretrained(handle.path, **kwargs)
    except OSError as exc:
        raise UsageError(f"cannot load {handle.path!r} as a transformers model for task "
                         f"{handle.task!r}: {exc}") from exc
    if handle.adapter_path:
        model = with_adapter(model, str(handle.adapter_path), config.merge_adapter_weights)
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def load_script_model(path: str, config: ConversionConfig) -> torch.nn.Module:
    """Call ``model_loader(path)`` from ``model_script``."""
    from olivine import load_function

    loader = load_function(str(config.model_script), str(config.model_loader), "model_script",
                           "model_loader")
    model = loader(path)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model_loader {config.model_loader!r} returned "
                         f"{type(model).__name__}, not a torch.nn.Module")
    return model.eval()


# -- inputs ---------------------------------------------------------------------------------
def text_input_names(model: torch.nn.Module) -> list[str]:
    """The text inputs ``model.forward`` accepts, in export order."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in TEXT_INPUTS if n in params]
    cfg = getattr(model, "config", None)
    if "token_type_ids" in names and not getattr(cfg, "type_vocab_size", 0):
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise UsageError(f"{type(model).__name__}.forward takes no input_ids; give "
                         "io_config.input_names for this model")
    return names


def text_inputs(names: Sequence[str], batch: int, seq: int, vocab: int,
                seed: int) -> dict[str, torch.Tensor]:
    """Random token inputs; every row after the first is right-padded by a few tokens."""
    gen = torch.Generator().manual_seed(seed)
    low = min(max(vocab // 10, 1), 1000)
    out: dict[str, torch.Tensor] = {}
    mask = torch.ones(batch, seq, dtype=torch.int64)
    for row in range(1, batch):
        mask[row, seq - min(row * 2, seq - 1):] = 0
    for name in names:
        if name == "input_ids":
            out[name] = torch.randint(low, vocab, (batch, seq), generator=gen, dtype=torch.int64)
        elif name == "attention_mask":
            out[name] = mask
        else:
            out[name] = torch.zeros(batch, seq, dtype=torch.int64)
    return out



def io_config_inputs(io: dict[str, Any], seed: int, high: int = 100) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes and types ``io_config`` gives (integers below ``high``)."""
    names = list(io.get("input_names") or [])
    shapes = io.get("input_shapes")
    types = io.get("input_types") or (["int64"] * len(names) if high > 100 else
                                      ["float32"] * len(names))
    if not shapes or len(shapes) != len(names) or len(types) != len(names):
        raise UsageError("io_config: input_shapes (and input_types, if given) need one entry per "
                         f"input name ({len(names)} names)")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, dtype in zip(names, shapes, types, strict=True):
        tdtype = getattr(torch, str(dtype), None)
        if not isinstance(tdtype, torch.dtype):
            raise UsageError(f"io_config.input_types: {dtype!r} is not a torch dtype")
        if tdtype.is_floating_point:
            out[name] = torch.randn(*shape, generator=gen).to(tdtype)
        else:
            if name == "attention_mask":
                out[name] = torch.ones(tuple(shape), dtype=tdtype)
            elif name == "token_type_ids":  # segment ids: 0 (BERT has 2 segments, not a vocab)
                out[name] = torch.zeros(tuple(shape), dtype=tdtype)
            else:
                out[name] = torch.randint(0, min(high, 1000), tuple(shape), generator=gen,
                                          dtype=tdtype)
    return out


# -- outputs --------------------------------------------------------------------------------
def output_fields(model: torch.nn.Module, sample: dict[str, torch.Tensor]) -> list[str]:
    """Tensor fields of the model's output for ``sample``, without caches and extras."""
    with torch.no_grad():
        out = model(**sample, return_dict=True)
    return [k for k, v in out.items() if isinstance(v, torch.Tensor) and k not in SKIPPED_OUTPUTS]


def default_dynamic_axes(inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
                         batch: int, seq: int) -> dict[str, dict[int, str]]:
    """Batch and sequence axes of inputs, and of outputs whose axes have those sizes."""
    axes: dict[str, dict[int, str]] = {}
    for name in inputs:
        axes[name] = {0: "batch_size", 1: "sequence_length"}
    for name, value in outputs.items():
        dims: dict[int, str] = {}
        if value.dim() >= 1 and value.shape[0] == batch:
            dims[0] = "batch_size"
        if value.dim() >= 2 and value.shape[1] == seq:
            dims[1] = "sequence_length"
        axes[name] = dims
    return axes


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the tracer's warnings about Python values becoming constants."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as float32/int numpy (bfloat16 is widened)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


# -- the pass -------------------------------------------------------------------------------
def prepare(config: ConversionConfig) -> None:
    """Import ``user_script`` (with ``script_dir`` on sys.path), as Olive does before a pass."""
    if config.user_script:
        from olivine import load_module

        load_module(config.user_script, config.script_dir, "user_script")


def image_io(torch_model: torch.nn.Module, io: dict[str, Any]) -> dict[str, Any]:
    """``io`` completed for an image model: ``pixel_values`` of the config's image size."""
    cfg = getattr(torch_model, "config", None)
    size = getattr(cfg, "image_size", 224)
    size = size if isinstance(size, int) else 224
    channels = int(getattr(cfg, "num_channels", 3) or 3)
    names = list(io.get("input_names") or ["pixel_values"])
    shapes = io.get("input_shapes") or [[1, channels, size, size]] * len(names)
    return {**io, "input_names": names, "input_shapes": shapes,
            "input_types": io.get("input_types") or ["float32"] * len(names)}


def convert(model: ModelHandle, config: ConversionConfig, context: PassContext) -> OnnxModel:
    """Export ``model`` into ``context.work_dir``; return the validated ONNX handle."""
    prepare(config)
    resolve_device(config)  # a missing device fails before any loading
    if isinstance(model, AdapterModel):
        model = adapter_as_hf(model)
    if isinstance(model, PyTorchModel):
        from olivine_transformers._torch_export import convert_pytorch

        return convert_pytorch(model, config, context)
    io = dict(config.io_config or (model.io_config_dict() if isinstance(model, HfModel) else {}))
    io = {k: plain_data(v) for k, v in io.items()}
    given_io = bool(io.get("input_names") or io.get("input_shapes"))
    unsupported = [k for k in ("dynamic_shapes", "string_to_int_dim_params") if io.get(k)]
    if unsupported:
        raise UsageError(f"io_config.{unsupported[0]} is not supported for a transformers model's "
                         "export; give dynamic_axes")
    is_hf = config.model_loader is None
    if is_hf:
        from olivine_transformers._decoder import convert_with_past, wants_past

        assert isinstance(model, HfModel)
        if wants_past(model, io):
            return convert_with_past(model, config, context)
    elif io.get("kv_cache"):
        raise UsageError("io_config.kv_cache needs a transformers causal LM; a model_loader "
                         "model gives its own past inputs through io_config.input_names")
    context.progress(0, 5, f"loading {model.path}")
    if is_hf:
        assert isinstance(model, HfModel)
        torch_model = load_hf_model(model, config)
        if model.task in IMAGE_TASKS:
            io = image_io(torch_model, io)
            input_names = list(io["input_names"])
        else:
            input_names = list(io.get("input_names") or text_input_names(torch_model))
        text_config = getattr(torch_model.config, "text_config", None)  # CLIP-like: text inside
        vocab = int(getattr(torch_model.config, "vocab_size", None)
                    or getattr(text_config, "vocab_size", None) or 1000)
        if io.get("input_shapes"):  # Olive's fixed sample shapes (and types)
            sample = io_config_inputs({**io, "input_names": input_names}, seed=0, high=vocab)
            check = io_config_inputs({**io, "input_names": input_names}, seed=1, high=vocab)
        else:
            sample = text_inputs(input_names, *EXPORT_SHAPE, vocab, seed=0)
            check = text_inputs(input_names, *(VALIDATION_SHAPE if config.dynamic else
                                               EXPORT_SHAPE), vocab, seed=1)
        sample, check = cast_floats(sample, config), cast_floats(check, config)
        fields: list[str] | None = output_fields(torch_model, sample)
        output_names = list(io.get("output_names") or fields or [])
        if len(output_names) > len(fields or []):
            raise UsageError(f"io_config.output_names: {len(output_names)} names, but the model "
                             f"returns {len(fields or [])} outputs ({', '.join(fields or [])})")
        fields = (fields or [])[:len(output_names)]
    else:
        torch_model = load_script_model(model.path, config)
        dtype = resolve_dtype(config)
        if dtype is not None:
            torch_model = torch_model.to(dtype)
        input_names = list(io["input_names"])
        sample = cast_floats(io_config_inputs(io, seed=0), config)
        check = cast_floats(io_config_inputs(io, seed=1), config)
        fields = None
    wrapper = KeywordWrapper(torch_model, input_names, fields,
                             {"return_dict": True} if is_hf else {}).eval()
    context.progress(1, 5, "running torch on sample inputs")
    with torch.no_grad():
        sample_out = wrapper(*sample.values())
        reference = [to_numpy(t) for t in wrapper(*check.values())]
    if not is_hf:
        output_names = list(io.get("output_names") or [f"output_{i}" for i in range(len(sample_out))])
    if io.get("output_shapes") or io.get("output_types"):
        from olivine_transformers._torch_export import _check_declared

        _check_declared(io, output_names, [to_numpy(t) for t in sample_out])
    if not config.dynamic:
        dynamic_axes: dict[str, dict[int, str]] = {}
    elif io.get("dynamic_axes") is not None:
        dynamic_axes = {k: {int(a): str(n) for a, n in dict(v).items()}
                        for k, v in io["dynamic_axes"].items()}
    elif isinstance(model, HfModel) and model.task in IMAGE_TASKS:
        # as Olive: an io_config without dynamic_axes exports at its fixed shapes
        dynamic_axes = {} if given_io else \
            {n: {0: "batch_size"} for n in [*input_names, *output_names]}
    elif is_hf:
        dynamic_axes = default_dynamic_axes(sample, dict(zip(output_names, sample_out, strict=True)),
                                            *EXPORT_SHAPE)
    else:
        dynamic_axes = {}
    exporter = "dynamo" if config.use_dynamo_exporter else "torchscript"
    context.progress(2, 5, f"exporting with the {exporter} exporter (opset {config.target_opset})")
    proto = _export(wrapper, sample, input_names, output_names, dynamic_axes, config, model.path)
    target = save_exported(proto, context.work_dir, config)
    del proto
    diffs: dict[str, float] = {}
    if config.validate:
        context.progress(3, 5, "validating ONNX Runtime outputs against torch")
        diffs = validate(target, check, input_names, output_names, reference, config)
        log.info("export validated: max abs difference %s", diffs)
    context.progress(4, 5, "writing tokenizer and config files")
    attributes: dict[str, Any] = {
        "exporter": exporter, "opset": config.target_opset,
        "input_names": input_names, "output_names": output_names,
        "validation_max_abs_diff": diffs,
    }
    if is_hf:
        from olivine_transformers._metadata import hf_attributes, write_sidecars

        assert isinstance(model, HfModel)
        write_sidecars(model, torch_model, context.work_dir, config)
        attributes.update(hf_attributes(model, torch_model, context.work_dir, config))
    context.progress(5, 5, "done")
    return OnnxModel(path=str(context.work_dir), onnx_file_name=target.name,
                     attributes={**model.attrs_dict(), **attributes})


def cast_floats(inputs: dict[str, torch.Tensor], config: ConversionConfig) -> dict[str, torch.Tensor]:
    """Float sample inputs in ``torch_dtype`` (as Olive casts its dummy inputs)."""
    dtype = resolve_dtype(config)
    if dtype is None:
        return inputs
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def save_exported(proto: Any, folder: Path, config: ConversionConfig) -> Path:
    """Write the exported model as the external-data options say; return its path."""
    from olivine.onnxsave import save_onnx

    return save_onnx(proto, folder, config).model_file()


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _export(wrapper: torch.nn.Module, sample: dict[str, torch.Tensor], input_names: list[str],
            output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
            config: ConversionConfig, source: str) -> Any:
    """Run torch.onnx.export (on ``device``) into a temporary folder; return the ModelProto."""
    import onnx

    device = resolve_device(config)
    args = tuple(_to_device(v, device) for v in sample.values())
    wrapper.to(device)
    with tempfile.TemporaryDirectory(prefix="olivine-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad(), quiet_export(), exportable_kron():
                if config.use_dynamo_exporter:
                    if importlib.util.find_spec("onnxscript") is None:
                        raise UsageError("use_dynamo_exporter needs the onnxscript package: pip "
                                         "install onnxscript (or olivine-transformers[dynamo])")
                    shapes = dynamo_shapes(wrapper, args, input_names, dynamic_axes)
                    program = torch.onnx.export(
                        wrapper, args, dynamo=True, input_names=input_names,
                        output_names=output_names, dynamic_shapes=shapes,
                        dynamic_axes=None if shapes is not None else (dynamic_axes or None),
                        opset_version=config.target_opset, external_data=False,
                        optimize=config.optimize)
                    assert program is not None
                    program.save(str(path))
                else:
                    torch.onnx.export(
                        wrapper, args, str(path), dynamo=False, input_names=input_names,
                        output_names=output_names, dynamic_axes=dynamic_axes or None,
                        opset_version=config.target_opset, do_constant_folding=config.optimize)
        except UsageError:
            raise
        except Exception as exc:  # the exporter raises many types; name the cause plainly
            exporter = "dynamo" if config.use_dynamo_exporter else "TorchScript"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OlivineError(f"torch.onnx ({exporter} exporter, opset {config.target_opset}) "
                               f"could not export {source}: {type(exc).__name__}: {first}") from exc
        finally:
            wrapper.to("cpu")
        proto = onnx.load(str(path), load_external_data=True)
        if config.use_dynamo_exporter and dynamic_axes:
            name_dims(proto, dynamic_axes)
        return proto


def dynamo_shapes(wrapper: torch.nn.Module, args: tuple[Any, ...], input_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]]) -> tuple[Any, ...] | None:
    """``dynamic_axes`` as torch.export ``dynamic_shapes`` (``Dim.AUTO`` per dynamic axis) in
    the structure of ``wrapper.forward``'s signature; ``None`` when there are none or the
    inputs are not flat tensors."""
    if not dynamic_axes or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    from torch.export import Dim

    specs = [{int(axis): Dim.AUTO for axis in dynamic_axes.get(name, {})} or None
             for name in input_names[:len(args)]]
    out: list[Any] = []
    for param in inspect.signature(wrapper.forward).parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            out.append(tuple(specs))
            specs = []
        elif param.kind in (inspect.Parameter.POSITIONAL_ONLY,
                            inspect.Parameter.POSITIONAL_OR_KEYWORD) and specs:
            out.append(specs.pop(0))
    return tuple(out)


def name_dims(proto: Any, dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Give the dynamo exporter's symbolic dims (``s0``, ...) the names of ``dynamic_axes``,
    everywhere in the graph's inputs, outputs and value infos."""
    graph = proto.graph
    rename: dict[str, str] = {}
    for value in [*graph.input, *graph.output]:
        for axis, label in dynamic_axes.get(value.name, {}).items():
            dims = value.type.tensor_type.shape.dim
            if int(axis) < len(dims) and dims[int(axis)].dim_param:
                rename.setdefault(dims[int(axis)].dim_param, str(label))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def cpu_session(path: Path) -> Any:
    """A one-thread, quiet CPU ONNX Runtime session of ``path`` (validation runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def validate(path: Path, inputs: dict[str, torch.Tensor], input_names: list[str],
             output_names: list[str], reference: list[np.ndarray],
             config: ConversionConfig) -> dict[str, float]:
    """Run ``path`` in ONNX Runtime on ``inputs``; compare with ``reference``; raise on mismatch."""
    try:
        session = cpu_session(path)
        graph_inputs = {i.name for i in session.get_inputs()}
        feeds = {n: to_numpy(inputs[n]) for n in input_names if n in graph_inputs}
        outputs = session.run(output_names, feeds)
    except Exception as exc:
        raise OlivineError(f"the exported model does not run in ONNX Runtime: "
                           f"{type(exc).__name__}: {exc}") from exc
    shape = "x".join(str(s) for s in next(iter(inputs.values())).shape)
    return compare_outputs(output_names, outputs, reference, config, f"sample inputs {shape}")


def compare_outputs(output_names: list[str], outputs: list[np.ndarray], reference: list[np.ndarray],
                    config: ConversionConfig, what: str = "the sample inputs") -> dict[str, float]:
    """Max abs difference per output between ONNX Runtime and torch; raise on a shape or
    tolerance mismatch, naming every bad output."""
    atol, rtol = config.tolerances()
    diffs: dict[str, float] = {}
    bad = []
    for name, got, want in zip(output_names, outputs, reference, strict=True):
        if got.shape != want.shape:
            bad.append(f"output {name!r} has shape {list(got.shape)} in ONNX Runtime but "
                       f"{list(want.shape)} in torch")
            continue
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) \
            if got.size else 0.0
        diffs[name] = diff
        if not np.allclose(got, want, atol=atol, rtol=rtol):
            rel = diff / max(float(np.max(np.abs(want.astype(np.float64)))), 1e-12)
            bad.append(f"output {name!r} differs from torch by max abs {diff:.3g} (max relative to "
                       f"the output's range {rel:.3g}); tolerance atol={atol:g}, rtol={rtol:g}")
    if bad:
        raise OlivineError(f"exported model does not match torch on {what}: " + "; ".join(bad))
    return diffs
