"""``OpenVINOWeightCompression``: ``nncf.compress_weights`` on an IR, an ONNX model, or a
Hugging Face model exported to IR through optimum-intel first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from olivine import HfModel, ModelHandle, OnnxModel, PassContext
from olivine_openvino import common
from olivine_openvino.model import OpenVINOModel
from olivine_openvino.options import WeightCompressionConfig


def _enum(owner: Any, value: Any) -> Any:
    """``value`` as a member of enum ``owner`` (by value or name, case-insensitively)."""
    if not isinstance(value, str):
        return value
    for member in owner:
        if value.lower() in (str(member.value).lower(), member.name.lower()):
            return member
    raise ValueError(f"{value!r} is not one of {', '.join(str(m.value) for m in owner)}")


def compress_kwargs(config: WeightCompressionConfig) -> dict[str, Any]:
    """compress_config with NNCF's enums, plus model_type/preset/ignored_scope/target device."""
    import nncf
    from nncf import parameters

    kwargs = dict(config.compress_config or {})
    table = {"mode": parameters.CompressWeightsMode,
             "sensitivity_metric": parameters.SensitivityMetric,
             "backup_mode": parameters.BackupMode,
             "compression_format": parameters.CompressionFormat}
    for key, owner in table.items():
        if kwargs.get(key) is not None:
            value = kwargs[key]
            if key == "mode" and value in ("int8", "int4"):
                value = f"{value}_asym"
            kwargs[key] = _enum(owner, value)
    extra = config.extra_args or {}
    if extra.get("model_type") is not None:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if extra.get("preset") is not None:
        kwargs["preset"] = _enum(nncf.QuantizationPreset, extra["preset"])
    scope = common.ignored_scope(config)
    if scope is not None:
        kwargs["ignored_scope"] = scope
    return kwargs


def _advanced(config: WeightCompressionConfig, external_dir: str | None) -> Any:
    import nncf

    params = dict((config.extra_args or {}).get("advanced_compression_parameters") or {})
    if external_dir is not None:
        from nncf.onnx.quantization.backend_parameters import BackendParameters

        backend = dict(params.get("backend_params") or {})
        backend.setdefault(BackendParameters.EXTERNAL_DATA_DIR, external_dir)
        params["backend_params"] = backend
    if not params:
        return None
    from nncf.quantization import advanced_parameters as ap

    nested = {"awq_params": ap.AdvancedAWQParameters,
              "scale_estimation_params": ap.AdvancedScaleEstimationParameters,
              "gptq_params": ap.AdvancedGPTQParameters,
              "lora_correction_params": ap.AdvancedLoraCorrectionParameters}
    for key, cls in nested.items():
        if isinstance(params.get(key), dict):
            params[key] = cls(**params[key])
    if isinstance(params.get("group_size_fallback_mode"), str):
        params["group_size_fallback_mode"] = _enum(ap.GroupSizeFallbackMode,
                                                   params["group_size_fallback_mode"])
    return nncf.AdvancedCompressionParameters(**params)


def _apply(target: Any, model: ModelHandle, config: WeightCompressionConfig,
           context: PassContext, external_dir: str | None = None) -> Any:
    import nncf

    dataset = common.nncf_dataset(config, context, model, required=False)
    return nncf.compress_weights(target, dataset=dataset,
                                 advanced_parameters=_advanced(config, external_dir),
                                 **compress_kwargs(config))


def compress(model: ModelHandle, config: WeightCompressionConfig,
             context: PassContext) -> ModelHandle:
    """Compress ``model``'s weights into ``context.work_dir``."""
    out = context.work_dir
    if isinstance(model, OpenVINOModel):
        import openvino as ov

        result = _apply(ov.Core().read_model(str(model.xml_file)), model, config, context)
        common.copy_side_files(Path(model.path), out)
        ov.save_model(result, str(out / f"{model.model_name}.xml"))  # fp16 floats, as Olive
        return OpenVINOModel(path=str(out), attributes=model.attrs_dict())
    if isinstance(model, OnnxModel):
        import onnx
        from onnx.external_data_helper import uses_external_data

        src = model.model_file()
        proto = onnx.load(str(src), load_external_data=False)
        opset = int((config.extra_args or {}).get("target_opset", 21))
        default = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        if default != opset:
            proto = onnx.version_converter.convert_version(onnx.load(str(src)), opset)
        external = any(uses_external_data(t) for t in proto.graph.initializer)
        result = _apply(proto, model, config, context, str(src.parent) if external else None)
        name = src.name.replace(".onnx", "_compressed.onnx")
        onnx.save(result, str(out / name), save_as_external_data=True, location=f"{name}.data")
        return OnnxModel(path=str(out), onnx_file_name=name, attributes=model.attrs_dict())
    assert isinstance(model, HfModel)
    from olivine_openvino.optimum import export_hf

    extra = {k: v for k, v in (config.extra_args or {}).items()
             if k not in ("model_type", "preset", "advanced_compression_parameters", "tokenizer",
                          "use_onnx", "target_opset")}
    export_hf(model, extra, None, out)
    from optimum.intel import OVModelForCausalLM

    ov_model = OVModelForCausalLM.from_pretrained(str(out), compile=False)
    tokenizer = None
    if (config.extra_args or {}).get("tokenizer"):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path)
    if tokenizer is not None and config.data_config is not None:
        import functools

        import nncf

        base = common.nncf_dataset(config, context, model, required=False)
        user = common.user_function(config, "transform_fn")
        fn = functools.partial(user, tokenizer=tokenizer) if user else None
        dataset = nncf.Dataset(base._data_source, fn) if fn else base
        ov_model.model = nncf.compress_weights(ov_model.model, dataset=dataset,
                                               advanced_parameters=_advanced(config, None),
                                               **compress_kwargs(config))
    else:
        ov_model.model = _apply(ov_model.model, model, config, context)
    import tempfile

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        ov_model.save_pretrained(tmp)
        del ov_model
        import shutil

        for item in Path(tmp).iterdir():
            target = out / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    from olivine_openvino.optimum import result_handle

    return result_handle(out)
