"""``OpenVINOOptimumConversion``: a Hugging Face model to OpenVINO IR through optimum-intel's
exporter, with its weight compression / quantization (``ov_quant_config``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from olivine import CompositeModel, HfModel, ModelHandle, PassContext
from olivine_openvino.model import TOKENIZER_DIRS, OpenVINOModel
from olivine_openvino.options import OptimumConversionConfig

_COMPRESSION = ("ratio", "group_size", "sym", "all_layers", "dataset", "num_samples", "awq",
                "scale_estimation", "gptq", "lora_correction", "sensitivity_metric",
                "backup_precision")
_QUANTIZATION = ("sym", "dataset", "num_samples", "smooth_quant_alpha")


def _library(model: HfModel, extra: dict[str, Any]) -> str:
    if extra.get("library"):
        return str(extra["library"])
    from optimum.intel.utils.modeling_utils import _infer_library_from_model_name_or_path

    return str(_infer_library_from_model_name_or_path(model.path))


def export_hf(model: HfModel, extra_args: dict[str, Any], ov_config: Any, out: Path,
              device: str | None = None) -> str:
    """Run optimum-intel's ``main_export`` into ``out`` with Olive's extra_args handling
    (library, disable_stateful, disable_convert_tokenizer); return the library name."""
    from optimum.exporters.openvino import main_export

    args = dict(extra_args)
    if device is not None:
        args["device"] = device
    library = _library(model, args)
    args.pop("library", None)
    args["stateful"] = not args.pop("disable_stateful", False)
    args["convert_tokenizer"] = not args.pop("disable_convert_tokenizer", False)
    args["library_name"] = library
    args["ov_config"] = ov_config
    options = model.load_options()
    if "trust_remote_code" in options and "trust_remote_code" not in args:
        args["trust_remote_code"] = options["trust_remote_code"]
    old_env, old_temp = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(out)
    try:
        main_export(model.path, str(out), **args)
    finally:
        tempfile.tempdir = old_temp
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
    return library


def _wc_config(q: dict[str, Any], default_4bit: dict[str, Any]) -> dict[str, Any]:
    int8 = q.get("weight_format") == "int8"
    all_layers = q.get("all_layers", q.get("all-layers", False))
    return {"bits": 8 if int8 else 4,
            "ratio": 1.0 if int8 else (q.get("ratio") or default_4bit.get("ratio")),
            "sym": q.get("sym", False), "group_size": -1 if int8 else q.get("group_size"),
            "all_layers": None if int8 else all_layers, "dataset": q.get("dataset"),
            "num_samples": q.get("num_samples"),
            "quant_method": "awq" if q.get("awq", False) else "default",
            "sensitivity_metric": q.get("sensitivity_metric"),
            "scale_estimation": q.get("scale_estimation"), "gptq": q.get("gptq"),
            "lora_correction": q.get("lora_correction"), "dtype": q.get("weight_format"),
            "backup_precision": q.get("backup_precision"),
            "statistics_path": q.get("statistics_path"),
            "group_size_fallback": q.get("group_size_fallback")}


def _q_config(q: dict[str, Any]) -> dict[str, Any]:
    return {"dtype": q.get("quant_mode"), "bits": 8, "sym": q.get("sym", False),
            "dataset": q.get("dataset"), "num_samples": q.get("num_samples"),
            "smooth_quant_alpha": q.get("smooth_quant_alpha")}


def ov_config_for(model: HfModel, q: dict[str, Any], library: str) -> Any:
    """optimum-intel's ``OVConfig`` for ``ov_quant_config`` (Olive's rules), or None."""
    from optimum.intel.openvino.configuration import (
        _DEFAULT_4BIT_WQ_CONFIG,
        OVConfig,
        get_default_quantization_config,
    )

    if not q:
        return None
    fmt, mode = q.get("weight_format"), q.get("quant_mode")
    if fmt is None and mode is None:
        return None
    if fmt in ("fp16", "fp32"):
        return OVConfig(dtype=fmt)
    default = get_default_quantization_config(model.path, fmt, mode)
    if fmt is not None:
        quant: Any = _wc_config(q, _DEFAULT_4BIT_WQ_CONFIG)
        plain = all(q.get(k, q.get("all-layers") if k == "all_layers" else None) is None
                    for k in _COMPRESSION)
        if plain and fmt in ("int4", "int8"):
            if default is not None:
                quant = default
            elif fmt == "int4":
                quant = dict(_DEFAULT_4BIT_WQ_CONFIG)
            if q.get("quantization_statistics_path") is not None:
                quant["statistics_path"] = q["quantization_statistics_path"]
    elif all(q.get(k) is None for k in _QUANTIZATION) and default is not None:
        quant = default
    else:
        if q.get("dataset") is None:
            raise ValueError("ov_quant_config.dataset: full quantization (quant_mode) needs a "
                             "calibration dataset name")
        if mode in ("int4_f8e4m3", "int4_f8e5m2", "cb4_f8e4m3"):
            if library == "diffusers":
                raise ValueError("ov_quant_config.quant_mode: mixed precision is not supported "
                                 "for diffusers models")
            wc = _wc_config(q, _DEFAULT_4BIT_WQ_CONFIG)
            wc["dtype"], qd = mode.split("_")
            qc = _q_config(q)
            qc["dtype"] = qd
            quant = {"weight_quantization_config": wc, "full_quantization_config": qc,
                     "num_samples": q.get("num_samples"), "dataset": q.get("dataset")}
        else:
            quant = _q_config(q)
    return OVConfig(quantization_config=quant)


def result_handle(out: Path) -> ModelHandle:
    """The exported folder as one OpenVINOModel, or a CompositeModel of its components (each
    extra ``<name>.xml`` moved into its own subfolder; tokenizer models are left out)."""
    stems = sorted(p.stem for p in out.glob("*.xml"))
    if not stems:
        raise RuntimeError("optimum-intel exported no OpenVINO model")
    if len(stems) > 1:
        for stem in stems:
            if stem == "openvino_model":
                continue
            sub = out / stem
            sub.mkdir(exist_ok=True)
            for suffix in (".xml", ".bin"):
                if (out / f"{stem}{suffix}").exists():
                    (out / f"{stem}{suffix}").rename(sub / f"{stem}{suffix}")
    parts = [s for s in stems if s not in TOKENIZER_DIRS]
    if len(parts) == 1:
        path = out if parts[0] == "openvino_model" or len(stems) == 1 else out / parts[0]
        return OpenVINOModel(path=str(path))
    components = tuple((s, OpenVINOModel(path=str(out if s == "openvino_model" else out / s)))
                       for s in parts)
    return CompositeModel(path=str(out), components=components)


def convert(model: HfModel, config: OptimumConversionConfig, context: PassContext) -> ModelHandle:
    """Export ``model`` into ``context.work_dir`` (then quantize it when ov_quant_config says)."""
    q = dict(config.ov_quant_config or {})
    extra = dict(config.extra_args or {})
    if extra.get("device") not in (None, config.device):
        context.logger.warning("extra_args.device %r: the export runs on the pass's device %r "
                               "(Olive replaces extra_args.device with it)", extra["device"],
                               config.device)
    if q.get("task") and not extra.get("task"):
        extra["task"] = q["task"]
    library = _library(model, extra)
    ov_config = ov_config_for(model, q, library)
    out = context.work_dir
    export_hf(model, extra, ov_config, out, device=config.device)
    quant = ov_config.quantization_config if ov_config is not None else None
    from optimum.intel.openvino.configuration import _GPTOSSQuantizationConfig

    if quant and not isinstance(quant, _GPTOSSQuantizationConfig):
        _quantize_exported(model, extra, library, quant, q, out)
    return result_handle(out)


def _quantize_exported(model: HfModel, extra: dict[str, Any], library: str, quant: Any,
                       q: dict[str, Any], out: Path) -> None:
    """optimum-intel's second step: load the exported model and apply ``quant`` in place."""
    import optimum.intel
    from optimum.intel.openvino.utils import _HEAD_TO_AUTOMODELS

    task = extra.get("task", "auto")
    if task == "auto":
        from optimum.exporters.tasks import TasksManager

        task = TasksManager.infer_task_from_model(model.path, library_name=library)
        if library == "transformers" and f"{task}-with-past" in \
                TasksManager.get_supported_tasks_for_model_type(
                    _model_type(model), exporter="openvino", library_name=library):
            task = f"{task}-with-past"
    name = "OVSentenceTransformer" if library == "sentence_transformers" else \
        _HEAD_TO_AUTOMODELS[task.replace("-with-past", "")]
    cls = getattr(optimum.intel, name)
    kwargs = {k: v for k, v in model.load_options().items()
              if k not in ("trust_remote_code", "cache_dir", "use_cache", "compile")}
    loaded = cls.from_pretrained(out, compile=False, trust_remote_code=q.get("trust_remote_code", False),
                                 cache_dir=q.get("cache_dir"), use_cache=task.endswith("with-past"),
                                 **kwargs)
    loaded._apply_quantization(quant, compile_only=False, compile_model=False,
                               model_name_or_path=model.path,
                               trust_remote_code=q.get("trust_remote_code", False),
                               save_directory=out, immediate_save=True)


def _model_type(model: HfModel) -> str:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model.path)
    return str(getattr(cfg, "export_model_type", cfg.model_type))
