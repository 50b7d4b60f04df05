"""``input_model``: Olive's HfModel, ONNXModel and PyTorchModel (current and older forms)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine.config.sections import HfModelSpec, OnnxModelSpec, PyTorchModelConfigOld, PyTorchModelSpec
from olivine.config.typed import Problems, is_missing, show, structure
from olivine.errors import did_you_mean
from olivine.models import HfModel, ModelHandle, OnnxModel, PyTorchModel, outside_external_data
from olivine.ortsession import settings_problems
from olivine.safepath import component_problem, path_problem

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@attrs.frozen
class InputModel:
    """The validated ``input_model``: which handle to start from."""

    type: str
    handle: ModelHandle
    is_hub_id: bool = False


def resolve_path(value: str, base_dir: Path) -> Path | None:
    if path_problem(value) is not None:  # callers check it first; never an OSError here
        return None
    p = Path(value).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    for root in (Path.cwd(), base_dir):
        if (root / p).exists():
            return (root / p).resolve()
    return None


def bad_path(value: Any, key: str, problems: Problems) -> bool:
    """Add a problem and return True when ``value`` is a path the file system would refuse."""
    problem = path_problem(value) if isinstance(value, str) else None
    if problem is not None:
        problems.add(key, problem)
    return problem is not None


def _outside_data(model_file: Path) -> list[str]:
    """External-data locations outside the model's folder; a file onnx cannot read is left to
    the passes, which report it."""
    try:
        return outside_external_data(model_file)
    except (ValueError, OSError):  # a damaged model is not this check's to report
        return []


def input_model(raw: Any, base_dir: Path, problems: Problems) -> InputModel | None:
    path = "input_model"
    if not isinstance(raw, Mapping):
        problems.add(path, "required: an object with type (HfModel or ONNXModel) and model_path"
                     if raw is None else f"expected an object, got {show(raw)}")
        return None
    mtype = str(raw.get("type", ""))
    kinds = {"hfmodel": "HfModel", "pytorchmodel": "PyTorchModel", "onnxmodel": "ONNXModel"}
    canonical = kinds.get(mtype.lower())
    if canonical is None:
        return _plugin_input_model(raw, mtype, base_dir, problems)
    data = dict(raw)
    io_config: Any = None
    if canonical == "PyTorchModel":
        nested = isinstance(data.get("config"), Mapping)
        if "config" in data and not nested:
            problems.add(f"{path}.config", f"expected an object, got {show(data['config'])}")
            return None
        if nested and set(data) - {"type", "config"}:
            for key in sorted(set(data) - {"type", "config"}):
                problems.add(f"{path}.{key}", "unknown key beside 'config'; give the options "
                             "either flat (Olive's current form) or under 'config'")
            return None
        cfg_raw = data["config"] if nested else {}
        if not nested or not cfg_raw.get("hf_config"):
            return _pytorch_model(data, base_dir, problems)
        cfg = structure(cfg_raw, PyTorchModelConfigOld, f"{path}.config", problems)
        if cfg is None or is_missing(cfg):
            return None
        hf = cfg.hf_config
        assert hf is not None
        load_kwargs = dict(hf.from_pretrained_args)
        if hf.trust_remote_code is not None:
            load_kwargs["trust_remote_code"] = hf.trust_remote_code
        model_path, task = cfg.model_path or hf.model_name, hf.task
        adapter = cfg.adapter_path
        io_config = cfg.io_config
        spec_path = f"{path}.config.hf_config.model_name"
    elif canonical == "HfModel":
        spec = structure(data, HfModelSpec, path, problems)
        if is_missing(spec):
            return None
        load_kwargs = dict(spec.load_kwargs)
        if spec.trust_remote_code is not None:
            load_kwargs["trust_remote_code"] = spec.trust_remote_code
        model_path, task, adapter = spec.model_path, spec.task, spec.adapter_path
        io_config = spec.io_config
        spec_path = f"{path}.model_path"
    else:
        if "config" in data and isinstance(data["config"], Mapping):
            data = {"type": data["type"], **data["config"]}
        onnx_spec = structure(data, OnnxModelSpec, path, problems)
        if is_missing(onnx_spec):
            return None
        bad_name = component_problem(onnx_spec.onnx_file_name) \
            if onnx_spec.onnx_file_name is not None else None
        if bad_name is not None:
            problems.add(f"{path}.onnx_file_name", f"{onnx_spec.onnx_file_name!r} {bad_name}: "
                         "name a file inside model_path")
            return None
        if bad_path(onnx_spec.model_path, f"{path}.model_path", problems):
            return None
        local = resolve_path(onnx_spec.model_path, base_dir)
        if local is None:
            problems.add(f"{path}.model_path", f"no such file or folder: {onnx_spec.model_path!r}")
            return None
        found = settings_problems(onnx_spec.inference_settings)
        for key, msg in found:
            problems.add(f"{path}.inference_settings" + (f".{key}" if key else ""), msg)
        if found:
            return None
        attributes = dict(onnx_spec.model_attributes)
        if onnx_spec.inference_settings:  # every session made for the model reads them
            attributes["inference_settings"] = dict(onnx_spec.inference_settings)
        handle = OnnxModel(path=str(local), onnx_file_name=onnx_spec.onnx_file_name,
                           attributes=attributes)
        try:
            if not handle.model_file().exists():
                problems.add(f"{path}.model_path", f"no ONNX model at {handle.model_file()}")
                return None
        except FileNotFoundError as exc:
            problems.add(f"{path}.onnx_file_name", str(exc))
            return None
        outside = _outside_data(handle.model_file())
        if outside:
            problems.add(f"{path}.model_path", f"{handle.model_file().name} keeps weights in "
                         f"{', '.join(repr(n) for n in outside)}, outside its folder "
                         f"{str(handle.model_file().parent)!r}; olivine reads external data only "
                         "from the model's own folder: move the data file beside the model and "
                         "save the model with a plain file name as location")
            return None
        return InputModel("ONNXModel", handle)
    if bad_path(model_path, spec_path, problems):
        return None
    local = resolve_path(model_path, base_dir)
    if adapter is not None and not bad_path(adapter, f"{path}.adapter_path", problems):
        adapter_local = resolve_path(adapter, base_dir)
        if adapter_local is None:
            problems.add(f"{path}.adapter_path", f"no such folder: {adapter!r}")
        adapter = str(adapter_local) if adapter_local else adapter
    if isinstance(io_config, str):
        problems.add(f"{path}.io_config", "a function name needs a PyTorchModel with model_script; "
                     "give HfModel's io_config as an object")
        return None
    io = dict(io_config or {})
    if local is not None:
        return InputModel("HfModel", HfModel(path=str(local), task=task, load_kwargs=load_kwargs,
                                             adapter_path=adapter, io_config=io))
    looks_local = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1
    if looks_local or not HUB_ID.match(model_path):
        problems.add(spec_path, f"no such folder: {model_path!r} (and it is not a Hugging Face "
                     f"hub id of the form org/name)")
        return None
    return InputModel("HfModel", HfModel(path=model_path, task=task, load_kwargs=load_kwargs,
                                         adapter_path=adapter, io_config=io), is_hub_id=True)


def _plugin_input_model(raw: Mapping[str, Any], mtype: str, base_dir: Path,
                        problems: Problems) -> InputModel | None:
    """An ``input_model`` whose type a plugin's model kind reads (``from_input_config``)."""
    from olivine.errors import ConfigError
    from olivine.plugins import get_plugin_host

    host = get_plugin_host()
    kind = host.input_types.get(mtype.lower())
    if kind is None:
        names = ["HfModel", "ONNXModel", "PyTorchModel",
                 *sorted(n for cls, _ in host.model_kinds.values()
                         for n in getattr(cls, "input_types", ()))]
        problems.add("input_model.type", f"unknown model type {show(mtype)}"
                     f"{did_you_mean(mtype, names)}; expected one of {', '.join(names)}")
        return None
    cls, owner = host.model_kinds[kind]
    config = {k: v for k, v in raw.items() if k != "type"}
    if isinstance(config.get("config"), Mapping) and set(config) == {"config"}:
        config = dict(config["config"])
    try:
        handle = cls.from_input_config(config, base_dir)  # type: ignore[attr-defined]
    except ConfigError as exc:
        for problem in exc.problems:
            problems.add("input_model", problem)
        return None
    if not isinstance(handle, ModelHandle):
        problems.add("input_model", f"plugin {owner!r} returned {handle!r} for type {mtype!r}, "
                     "not a model handle")
        return None
    canonical = next(n for n in getattr(cls, "input_types", ()) if n.lower() == mtype.lower())
    return InputModel(canonical, handle)


#: Olive's PyTorch model file formats and whether olivine loads them
PYTORCH_FORMATS = {"pytorch.statedict": True, "pytorch.entiremodel": True,
                   "pytorch.torchscript": True, "pytorch.slicegpt": False,
                   "pytorch.diffusers": False}


def _pytorch_model(data: Mapping[str, Any], base_dir: Path, problems: Problems) -> InputModel | None:
    """Olive's current ``PyTorchModel`` (flat, or its older ``config`` without ``hf_config``)."""
    path = "input_model"
    flat = {"type": data["type"], **(data["config"] if isinstance(data.get("config"), Mapping)
                                     else {k: v for k, v in data.items() if k != "type"})}
    where = f"{path}.config" if "config" in data else path
    flat.pop("hf_config", None)
    spec = structure(flat, PyTorchModelSpec, where if "config" in data else path, problems)
    if is_missing(spec):
        return None
    fmt = spec.model_file_format
    if fmt.lower() not in PYTORCH_FORMATS:
        problems.add(f"{where}.model_file_format", f"unknown format {fmt!r}; expected one of "
                     "PyTorch.StateDict, PyTorch.EntireModel, PyTorch.TorchScript")
        return None
    if not PYTORCH_FORMATS[fmt.lower()]:
        problems.add(f"{where}.model_file_format", f"{fmt} models are not supported by olivine")
        return None
    if spec.model_loader is None and fmt.lower() != "pytorch.torchscript":
        problems.add(f"{where}.model_loader", "required: the name of a function in model_script "
                     "that returns the torch.nn.Module (model_loader(model_path))")
        return None
    functions = [spec.model_loader, spec.dummy_inputs_func,
                 spec.io_config if isinstance(spec.io_config, str) else None]
    if spec.model_script is None and any(functions):
        problems.add(f"{where}.model_script", "required: the Python file defining "
                     + ", ".join(repr(f) for f in functions if f))
        return None
    script = script_dir = None
    if spec.script_dir is not None and not bad_path(spec.script_dir, f"{where}.script_dir", problems):
        found = resolve_path(spec.script_dir, base_dir)
        if found is None or not found.is_dir():
            problems.add(f"{where}.script_dir", f"no such folder: {spec.script_dir!r}")
            return None
        script_dir = str(found)
    if spec.model_script is not None and not bad_path(spec.model_script, f"{where}.model_script",
                                                       problems):
        found = resolve_path(spec.model_script, base_dir)
        if found is None and script_dir is not None and (Path(script_dir) / spec.model_script).is_file():
            found = Path(script_dir) / spec.model_script
        if found is None or not found.is_file():
            problems.add(f"{where}.model_script", f"no such file: {spec.model_script!r}")
            return None
        script = str(found)
    model_path = spec.model_path or ""
    if model_path and not bad_path(model_path, f"{where}.model_path", problems):
        local = resolve_path(model_path, base_dir)
        model_path = str(local) if local is not None else model_path
    if fmt.lower() == "pytorch.torchscript" and spec.model_loader is None and \
            not (model_path and Path(model_path).is_file()):
        problems.add(f"{where}.model_path", f"no such TorchScript file: {spec.model_path!r}")
        return None
    handle = PyTorchModel(path=model_path, model_loader=spec.model_loader, model_script=script,
                          script_dir=script_dir, model_file_format=fmt,
                          io_config=spec.io_config, dummy_inputs_func=spec.dummy_inputs_func,
                          attributes=spec.model_attributes)
    return InputModel("PyTorchModel", handle)
