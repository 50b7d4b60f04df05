"""Olive's OpenVINO passes on Intel's stack: openvino, nncf and optimum-intel.

Each pass checks before anything runs that the libraries it needs are installed (a config
error naming what to install) and imports them only when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from olivine import Accelerator, ModelHandle, OnnxModel, Pass, PassContext, UsageError
from olivine_openvino import common
from olivine_openvino.model import OpenVINOModel
from olivine_openvino.options import (
    ConversionConfig,
    EncapsulationConfig,
    IoUpdateConfig,
    QuantizationConfig,
    WeightCompressionConfig,
)

#: task -> transformers auto class, for HfModel inputs of OpenVINOConversion
_AUTO = {"text-classification": "AutoModelForSequenceClassification",
         "token-classification": "AutoModelForTokenClassification",
         "question-answering": "AutoModelForQuestionAnswering",
         "text-generation": "AutoModelForCausalLM",
         "image-classification": "AutoModelForImageClassification",
         "fill-mask": "AutoModelForMaskedLM"}


class _OpenVINOPass(Pass):
    """Shared parts: the modules a pass needs and the reuse_cache note."""

    modules: tuple[str, ...] = ("openvino",)
    libraries: ClassVar[tuple[str, ...]] = ("openvino",)
    isolate = True
    needs_execution_provider = False

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """A config error naming what to install when the pass's libraries are absent."""
        return common.dependency_problems(cls.name, cls.modules)

    @staticmethod
    def note_reuse_cache(config: Any, context: PassContext) -> None:
        if getattr(config, "reuse_cache", False):
            context.logger.info("reuse_cache: olivine never rewrites an earlier step's output "
                                "(the cache keeps it); this step writes its own folder")


def _torch_module(model: ModelHandle) -> Any:
    """The torch module of an HfModel (by its task) or a PyTorchModel (its model_loader)."""
    from olivine import HfModel, PyTorchModel, call_object, load_module

    if isinstance(model, PyTorchModel):
        if not (model.model_script and model.model_loader):
            raise UsageError("input_model: OpenVINOConversion loads a PyTorchModel through "
                             "model_script and model_loader")
        module = load_module(model.model_script, model.script_dir, "input_model.model_script")
        return call_object(module, model.model_loader, "input_model.model_loader")(model.model_path)
    assert isinstance(model, HfModel)
    import transformers

    auto = getattr(transformers, _AUTO.get(model.task.replace("-with-past", ""), "AutoModel"))
    module = auto.from_pretrained(model.path, **model.load_options())
    module.eval()
    return module


class OpenVINOConversion(_OpenVINOPass):
    """Olive's ``OpenVINOConversion``: a torch (HfModel, PyTorchModel) or ONNX model to OpenVINO
    IR with ``openvino.convert_model``; ``static`` fixes the input shapes."""

    name = "OpenVINOConversion"
    Config = ConversionConfig
    accepts = ("hf", "pytorch", "onnx")
    produces = "openvino"

    def run(self, model: ModelHandle, config: ConversionConfig, context: PassContext) -> ModelHandle:
        import openvino as ov

        shapes: Any = config.input_shapes
        if isinstance(shapes, str):
            shapes = common.user_function(_Named(config, "input_shapes"), "input_shapes")()  # type: ignore[misc]
        example: Any = None
        if isinstance(model, OnnxModel):
            source: Any = str(model.model_file())
        else:
            source = _torch_module(model)
            if config.example_input_func:
                example = common.user_function(config, "example_input_func")()  # type: ignore[misc]
            elif isinstance(shapes, list):
                import torch

                example = [torch.rand(*s) for s in shapes]
        args: dict[str, Any] = {"example_input": example, **(config.extra_configs or {})}
        if config.static:
            args["input"] = shapes
        try:
            ov_model = ov.convert_model(source, **args)
        except Exception as exc:
            if example is None or isinstance(model, OnnxModel):
                raise UsageError(f"openvino.convert_model failed: {type(exc).__name__}: "
                                 f"{exc}") from exc
            # TorchScript tracing fails on some transformers versions' mask code; torch.export
            # of the same module with the same example inputs is OpenVINO's other torch route
            # (on a freshly loaded module: a failed trace can leave OpenVINO's patches on it)
            context.logger.info("tracing failed (%s); converting through torch.export", exc)
            fixed = bool(config.static and shapes)
            ov_model = ov.convert_model(_exported(_torch_module(model), example, dynamic=not fixed),
                                        **{k: v for k, v in args.items() if k != "example_input"})
        out = context.work_dir / f"{config.model_name}.xml"
        ov.save_model(ov_model, str(out), compress_to_fp16=config.compress_to_fp16)
        from olivine import HfModel

        # where the tokenizer lives, for data configs and metrics of the IR (as OnnxConversion)
        attributes = dict(model.attrs_dict())
        if isinstance(model, HfModel):
            attributes.update(hf_model_path=model.path, task=model.task)
        return OpenVINOModel(path=str(context.work_dir), attributes=attributes)


def _exported(module: Any, example: Any, dynamic: bool = True) -> Any:
    """``torch.export`` of ``module`` on ``example`` (a list/tuple of positional inputs, a dict of
    keyword inputs, or one tensor); with ``dynamic``, every dimension torch can keep symbolic is.

    A plain export fixes every size to the example's: its IR still shows ``[?,?]`` inputs, but
    other batch sizes give wrong outputs (all rows alike) and other lengths fail. torch fixes
    sizes 0 and 1 even when asked not to, so a batch of one is exported as two copies (the
    example as given if that fails)."""
    import torch

    def own(value: Any) -> Any:  # one tensor given for two inputs would export as one input
        return value.clone() if isinstance(value, torch.Tensor) else value

    def widen(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 1:
            return torch.cat([value, value])
        return value

    def spec(value: Any) -> Any:
        auto = torch.export.Dim.AUTO
        return {i: auto for i in range(value.ndim)} if isinstance(value, torch.Tensor) else None

    if isinstance(example, dict):
        kwargs = {k: own(v) for k, v in example.items()}
        args: tuple[Any, ...] = ()
    else:
        kwargs = {}
        args = tuple(map(own, example)) if isinstance(example, list | tuple) else (own(example),)
    if not dynamic:
        return torch.export.export(module, args, kwargs=kwargs)

    def export(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        shapes: Any = {n: spec(v) for n, v in k.items()} if k else tuple(map(spec, a))
        return torch.export.export(module, a, kwargs=k, dynamic_shapes=shapes)

    try:
        return export(tuple(map(widen, args)), {k: widen(v) for k, v in kwargs.items()})
    except Exception:  # e.g. a model whose first dimension is no batch
        return export(args, kwargs)


class _Named:
    """A view of a config whose option ``key`` names a user_script function."""

    def __init__(self, config: Any, key: str) -> None:
        self.user_script, self.script_dir = config.user_script, config.script_dir
        setattr(self, key, getattr(config, key))


class OpenVINOIoUpdate(_OpenVINOPass):
    """Olive's ``OpenVINOIoUpdate``: names unnamed inputs/outputs (``input_<i>``,
    ``output_<i>``) or renames inputs (``input_names``); with ``static``, reshapes to
    ``input_shapes``. The IR is written as ``<name>_st`` (static) or ``<name>_dy``."""

    name = "OpenVINOIoUpdate"
    Config = IoUpdateConfig
    accepts = ("openvino",)
    produces = "openvino"

    def run(self, model: ModelHandle, config: IoUpdateConfig, context: PassContext) -> ModelHandle:
        import openvino as ov

        assert isinstance(model, OpenVINOModel)
        self.note_reuse_cache(config, context)
        ir = ov.Core().read_model(str(model.xml_file))
        changed = False
        if config.input_names is not None and len(config.input_names) != len(ir.inputs):
            raise UsageError(f"input_names: the model has {len(ir.inputs)} inputs, "
                             f"{len(config.input_names)} names were given")
        for i in range(len(ir.inputs)):
            if config.input_names:
                ir.input(i).set_names({config.input_names[i]})
                changed = True
            if not ir.input(i).get_names():
                ir.input(i).set_names({f"input_{i}"})
                changed = True
        for i in range(len(ir.outputs)):
            if not ir.output(i).get_names():
                ir.output(i).set_names({f"output_{i}"})
                changed = True
        stem = f"{model.model_name}_{'st' if config.static else 'dy'}"
        out = context.work_dir
        if config.static:
            assert config.input_shapes is not None
            if len(config.input_shapes) != len(ir.inputs):
                raise UsageError(f"input_shapes: the model has {len(ir.inputs)} inputs, "
                                 f"{len(config.input_shapes)} shapes were given")
            ir.reshape({ir.input(i): ov.PartialShape(s) for i, s in enumerate(config.input_shapes)})
            ov.save_model(ir, str(out / f"{stem}.xml"), compress_to_fp16=False)
        elif changed:
            ov.save_model(ir, str(out / f"{stem}.xml"), compress_to_fp16=False)
        else:
            common.link_ir(model.xml_file, out, stem)
        common.copy_side_files(Path(model.path), out)
        return OpenVINOModel(path=str(out), attributes=model.attrs_dict())


class OpenVINOQuantization(_OpenVINOPass):
    """Olive's ``OpenVINOQuantization``: NNCF post-training int8 quantization
    (``nncf.quantize``) of an OpenVINO IR or an ONNX model, calibrated on ``data_config``."""

    name = "OpenVINOQuantization"
    Config = QuantizationConfig
    accepts = ("openvino", "onnx")
    produces = "openvino"
    produces_for = {"onnx": "onnx"}
    modules = ("openvino", "nncf")
    libraries = ("openvino", "nncf")
    with_accuracy = False

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """Missing libraries; WithAccuracy-only options given to the plain pass."""
        out = super().check(config, accelerator, model)
        if not cls.with_accuracy:
            for key, default in (("validation_func", None), ("max_drop", 0.01),
                                 ("drop_type", "ABSOLUTE")):
                if getattr(config, key) != default:
                    out.append(f"{key}: applies to OpenVINOQuantizationWithAccuracy only")
        return out

    def _params(self, config: QuantizationConfig) -> dict[str, Any]:
        import nncf

        params: dict[str, Any] = {
            "model_type": nncf.ModelType.TRANSFORMER if config.model_type == "TRANSFORMER" else None,
            "preset": getattr(nncf.QuantizationPreset, config.preset),
            "target_device": common.nncf_target_device(config.target_device),
        }
        scope = common.ignored_scope(config)
        if scope is not None:
            params["ignored_scope"] = scope
        return params

    def run(self, model: ModelHandle, config: QuantizationConfig, context: PassContext) -> ModelHandle:
        import nncf

        self.note_reuse_cache(config, context)
        dataset = common.nncf_dataset(config, context, model)
        loaded, save = _load_for_nncf(model, context.work_dir)
        params = self._params(config)
        if self.with_accuracy:
            validate = common.user_function(config, "validation_func") or _default_validation
            drop = getattr(nncf.DropType, config.drop_type)
            quantized = nncf.quantize_with_accuracy_control(
                loaded, calibration_dataset=dataset, validation_dataset=dataset,
                validation_fn=validate, max_drop=config.max_drop, drop_type=drop, **params)
        else:
            advanced = None
            for entry in config.extra_configs or []:
                if entry.get("advanced_quantization_parameters"):
                    advanced = nncf.AdvancedQuantizationParameters(
                        **entry["advanced_quantization_parameters"])
            quantized = nncf.quantize(loaded, dataset, advanced_parameters=advanced, **params)
        return save(quantized, "_quant")


def _default_validation(model: Any, data: Any) -> float:
    """Olive's default validation metric: top-1 accuracy of output 0 against the labels, on
    the compiled IR NNCF passes (an ``openvino.CompiledModel``) or, for an ONNX model, on an
    ONNX Runtime CPU session of the ``onnx.ModelProto`` it passes."""
    import numpy as np

    if callable(model):
        run = model
    else:  # an onnx.ModelProto
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(feeds: Any) -> Any:
            if not isinstance(feeds, dict):
                feeds = dict(zip(names, feeds if isinstance(feeds, list | tuple) else [feeds],
                                 strict=False))
            return session.run(None, {k: v for k, v in feeds.items() if k in names})

    hits = total = 0
    for inputs, labels in data:
        result = run(common._numpy(inputs))[0]
        pred = np.argmax(result, axis=-1)
        labels = common._numpy(labels)
        hits += int(np.sum(pred == np.asarray(labels)))
        total += int(np.size(labels))
    return hits / max(total, 1)


class OpenVINOQuantizationWithAccuracy(OpenVINOQuantization):
    """Olive's ``OpenVINOQuantizationWithAccuracy``: ``nncf.quantize_with_accuracy_control``;
    layers go back to float until the ``validation_func`` metric drops at most ``max_drop``."""

    name = "OpenVINOQuantizationWithAccuracy"
    with_accuracy = True


def _load_for_nncf(model: ModelHandle, out: Path) -> tuple[Any, Any]:
    """The model object NNCF takes (ov.Model or onnx.ModelProto) and a saver of its result."""
    if isinstance(model, OpenVINOModel):
        import openvino as ov

        def save_ir(result: Any, suffix: str) -> ModelHandle:
            common.copy_side_files(Path(model.path), out)
            # as Olive: openvino's default, float constants NNCF left stored as fp16
            ov.save_model(result, str(out / f"{model.model_name}{suffix}.xml"))
            return OpenVINOModel(path=str(out), attributes=model.attrs_dict())

        return ov.Core().read_model(str(model.xml_file)), save_ir
    assert isinstance(model, OnnxModel)
    import onnx

    src = model.model_file()

    def save_onnx(result: Any, suffix: str) -> ModelHandle:
        name = src.name.replace(".onnx", f"{suffix}.onnx")
        big = result.ByteSize() > 2_000_000_000 if hasattr(result, "ByteSize") else True
        onnx.save(result, str(out / name), save_as_external_data=big,
                  location=f"{name}.data" if big else None)
        return OnnxModel(path=str(out), onnx_file_name=name, attributes=model.attrs_dict())

    return onnx.load(str(src)), save_onnx


class OpenVINOWeightCompression(_OpenVINOPass):
    """Olive's ``OpenVINOWeightCompression``: ``nncf.compress_weights`` (int8/int4 weights) of an
    OpenVINO IR, an ONNX model, or a Hugging Face model exported through optimum-intel first."""

    name = "OpenVINOWeightCompression"
    Config = WeightCompressionConfig
    accepts = ("openvino", "onnx", "hf")
    produces = "openvino"
    produces_for = {"onnx": "onnx", "hf": "openvino"}
    modules = ("openvino", "nncf")
    libraries = ("openvino", "nncf", "optimum-intel")

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """Missing libraries (optimum-intel too for a Hugging Face input)."""
        from olivine import HfModel

        mods = cls.modules + (("optimum.intel",) if isinstance(model, HfModel) else ())
        return common.dependency_problems(cls.name, mods)

    def run(self, model: ModelHandle, config: WeightCompressionConfig,
            context: PassContext) -> ModelHandle:
        from olivine_openvino.compress import compress

        self.note_reuse_cache(config, context)
        return compress(model, config, context)


class OpenVINOEncapsulation(_OpenVINOPass):
    """Olive's ``OpenVINOEncapsulation``: an ONNX model whose one ``EPContext`` node points at
    the IR, for onnxruntime's OpenVINO execution provider (``onnxruntime-openvino``)."""

    name = "OpenVINOEncapsulation"
    Config = EncapsulationConfig
    accepts = ("openvino",)
    produces = "onnx"
    modules = ("openvino", "onnx")

    def run(self, model: ModelHandle, config: EncapsulationConfig,
            context: PassContext) -> ModelHandle:
        from olivine_openvino.encapsulate import encapsulate

        assert isinstance(model, OpenVINOModel)
        self.note_reuse_cache(config, context)
        return encapsulate(model, config, context.work_dir)
