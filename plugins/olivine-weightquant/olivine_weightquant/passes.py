"""The weight-quantization passes.

ONNX in, ONNX out: ``OnnxBlockWiseRtnQuantization`` (also ``rtn``) and
``OnnxHqqQuantization`` (also ``hqq``). Hugging Face in, Hugging Face (GPTQ format)
out: ``Gptq`` (also Olive's ``GptqQuantizer`` and ``GptqModel``), ``Awq`` and ``Rtn``;
their output feeds ``ModelBuilder``. Names resolve as in Olive: ``rtn`` is the Hugging
Face pass, the ONNX one is ``OnnxBlockWiseRtnQuantization``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

from olivine import Accelerator, HfModel, ModelHandle, OnnxModel, Pass, PassContext, UsageError
from olivine_weightquant.config import (
    AwqConfig,
    CalibrationFields,
    GptqConfig,
    GptqModelConfig,
    GptqQuantizerConfig,
    HfWeightConfig,
    OnnxGptqConfig,
    OnnxHqqConfig,
    OnnxRtnConfig,
    RtnHfConfig,
    calibration_problems,
)

ROWS_PER_CHUNK = 8192


def _rowwise(fn: Any, w: Any) -> Any:
    """Apply a quantizer to ``W[N, K]`` a block of rows at a time (bounded temporaries)."""
    import torch

    from olivine_weightquant.core import QuantizedWeight

    if w.shape[0] <= ROWS_PER_CHUNK:
        return fn(w.float())
    parts = [fn(w[i:i + ROWS_PER_CHUNK].float()) for i in range(0, w.shape[0], ROWS_PER_CHUNK)]
    first = parts[0]
    return QuantizedWeight(torch.cat([p.q for p in parts]), torch.cat([p.scales for p in parts]),
                           torch.cat([p.zeros for p in parts]), first.bits, first.group_size,
                           first.symmetric)


def _onnx_source(model: ModelHandle, pass_name: str) -> tuple[OnnxModel, Path]:
    """``model`` as an ONNX model and its .onnx file; :class:`UsageError` for other kinds or a
    missing file."""
    if not isinstance(model, OnnxModel):
        raise UsageError(f"{pass_name} takes ONNX models, got a {model.kind} model")
    source = model.model_file()
    if not source.is_file():
        raise UsageError(f"ONNX model file {source} does not exist")
    return model, source


def _copy_side_files(model: OnnxModel, target: Path, written: Path) -> None:
    """Copy genai_config.json, tokenizer files and the like beside the new model."""
    folder = Path(model.path)
    if not folder.is_dir():
        return
    skip = {p.name for p in model.files() if p.suffix == ".onnx" or p.name.endswith(".data")}
    source = model.model_file()
    skip |= {source.name, f"{source.name}.data", written.name, f"{written.name}.data"}
    for item in folder.iterdir():
        if item.is_file() and item.name not in skip and item.suffix != ".onnx" \
                and not (target / item.name).exists():
            shutil.copy2(item, target / item.name)


class _OnnxWeightPass(Pass):
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "torch", "numpy")
    isolate: ClassVar[bool] = True
    preload: ClassVar[tuple[str, ...]] = ("torch", "onnx")

    def quantizer(self, config: Any) -> Any:
        raise NotImplementedError

    def selection(self, config: Any) -> Any:
        raise NotImplementedError

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Quantize every selected MatMul (and Gather) weight into ``context.work_dir``."""
        from olivine_weightquant.onnx_nbits import quantize_onnx

        onnx_model, source = _onnx_source(model, self.name)
        fn = self.quantizer(config)
        written = quantize_onnx(source, context.work_dir, lambda w: _rowwise(fn, w), bits=config.bits,
                                block_size=config.block_size, accuracy_level=config.accuracy_level,
                                selection=self.selection(config), progress=context.progress)
        _copy_side_files(onnx_model, context.work_dir, written)
        attributes = {**model.attrs_dict(), "weight_bits": config.bits,
                      "weight_block_size": config.block_size, "weight_quantization": self.name}
        return OnnxModel(path=str(context.work_dir), onnx_file_name=written.name, attributes=attributes)


class OnnxBlockWiseRtnQuantization(_OnnxWeightPass):
    """Round-to-nearest block quantization of MatMul (and Gather) weights to MatMulNBits."""

    name: ClassVar[str] = "OnnxBlockWiseRtnQuantization"
    aliases: ClassVar[tuple[str, ...]] = ("OnnxRtnQuantization",)
    Config: ClassVar[type] = OnnxRtnConfig
    version: ClassVar[str] = "1"

    def quantizer(self, config: OnnxRtnConfig) -> Any:
        """RTN with the configured bits, block size and symmetry."""
        from olivine_weightquant.core import rtn

        return lambda w: rtn(w, config.bits, config.block_size, config.is_symmetric)

    def selection(self, config: OnnxRtnConfig) -> Any:
        """The node filter."""
        from olivine_weightquant.onnx_nbits import Selection

        return Selection(tuple(config.op_types_to_quantize), tuple(config.nodes_to_include),
                         tuple(config.nodes_to_exclude))


class OnnxHqqQuantization(_OnnxWeightPass):
    """Half-quadratic (HQQ) block quantization of MatMul weights: fitted fractional zero points."""

    name: ClassVar[str] = "OnnxHqqQuantization"
    aliases: ClassVar[tuple[str, ...]] = ("hqq",)
    Config: ClassVar[type] = OnnxHqqConfig
    version: ClassVar[str] = "1"

    def quantizer(self, config: OnnxHqqConfig) -> Any:
        """HQQ with float zero points (MatMulNBits takes zero points of the scales' type)."""
        from olivine_weightquant.core import hqq

        if config.block_size > 32:
            logging.getLogger("olivine.pass.OnnxHqqQuantization").warning(
                "HQQ at block_size %d: measured no better than RTN (OnnxBlockWiseRtnQuantization, "
                "asymmetric) at blocks above 32; its gain is at block_size 16 or 32",
                config.block_size)
        return lambda w: hqq(w, config.bits, config.block_size, iters=config.iterations)

    def selection(self, config: OnnxHqqConfig) -> Any:
        """MatMul only: GatherBlockQuantized has no float zero points."""
        from olivine_weightquant.onnx_nbits import Selection

        return Selection(("MatMul",), tuple(config.nodes_to_include), tuple(config.nodes_to_exclude))


# -- Hugging Face -----------------------------------------------------------------------------------


class OnnxGptqQuantization(Pass):
    """GPTQ of an ONNX model's MatMul weights to MatMulNBits, Hessians from ONNX Runtime runs."""

    name: ClassVar[str] = "OnnxGptqQuantization"
    aliases: ClassVar[tuple[str, ...]] = ("OnnxGptq",)
    Config: ClassVar[type] = OnnxGptqConfig
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "torch", "numpy", "transformers")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator, model: ModelHandle | None = None) -> list[str]:
        """Refuse a config without (or with two) calibration sources."""
        return calibration_problems(config)

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Calibrate with ONNX Runtime, then GPTQ every selected MatMul weight."""
        from transformers import AutoTokenizer

        from olivine_weightquant.data import token_windows
        from olivine_weightquant.onnx_gptq import OnnxGptq
        from olivine_weightquant.onnx_nbits import Selection, quantize_onnx

        onnx_model, source = _onnx_source(model, self.name)
        problems = calibration_problems(config)
        if problems:
            raise UsageError(problems[0])
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.name} needs the model's tokenizer beside {source.name} (in "
                             f"{source.parent}) to tokenize the calibration text: {exc}") from None
        data = calibration_source(config, context)
        context.progress(0, None, f"tokenizing calibration text ({data.describe()})")
        windows = token_windows(data, tokenizer).numpy()
        gptq = OnnxGptq(source, windows, bits=config.bits, block_size=config.block_size,
                        symmetric=config.is_symmetric, damp_percent=config.damp_percent,
                        act_order=config.act_order, memory_mb=config.hessian_memory_mb,
                        progress=context.progress)
        selection = Selection(("MatMul",), tuple(config.nodes_to_include), tuple(config.nodes_to_exclude))
        written = quantize_onnx(source, context.work_dir, gptq, bits=config.bits,
                                block_size=config.block_size, accuracy_level=config.accuracy_level,
                                selection=selection, progress=context.progress,
                                candidates_hook=gptq.plan)
        _copy_side_files(onnx_model, context.work_dir, written)
        context.logger.info("GPTQ on %d weights, %d calibration passes of %d windows x %d tokens",
                            len(gptq.losses), gptq.passes, windows.shape[0], windows.shape[1])
        attributes = {**model.attrs_dict(), "weight_bits": config.bits,
                      "weight_block_size": config.block_size, "weight_quantization": self.name,
                      "calibration": {"windows": int(windows.shape[0]),
                                      "tokens": int(windows.size), "passes": gptq.passes}}
        return OnnxModel(path=str(context.work_dir), onnx_file_name=written.name, attributes=attributes)


def local_folder(model: HfModel) -> Path:
    """The model's folder, downloading a hub id's config, tokenizer and safetensors if needed."""
    if model.is_local():
        return Path(model.path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model.path, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                                  "*.model", "*.jinja"]))
    except Exception as exc:  # offline, unknown repo, no access: all for the user to fix
        raise UsageError(f"cannot fetch {model.path!r} from the Hugging Face hub: {exc}") from None


def hf_options(config: Any, algorithm: str, attributes: dict[str, Any] | None = None) -> Any:
    """The driver's options for a pass config and the input model's attributes.

    As in Olive, the input's ``mixed_precision_info`` (what ``SelectiveMixedPrecision``
    chose) replaces the pass's defaults where it sets them, and the pass's ``overrides``
    take precedence over its per-module choices.
    """
    from olivine_weightquant.hf_quant import HfOptions

    extra: dict[str, Any] = {}
    if hasattr(config, "damp_percent"):
        desc_act = getattr(config, "desc_act", False)
        if desc_act is None:  # Olive's Gptq: act-order by default for one block per row only
            desc_act = config.group_size == -1
        extra = {"damp_percent": config.damp_percent, "act_order": bool(desc_act),
                 "true_sequential": bool(getattr(config, "true_sequential", False))}
    if isinstance(config, AwqConfig):
        extra = {"awq_grid": config.grid}
    base = {"bits": config.bits, "group_size": config.group_size, "symmetric": config.sym}
    overrides: dict[str, dict[str, Any]] = {}
    info = (attributes or {}).get("mixed_precision_info")
    if isinstance(info, dict):
        default = info.get("default") or {}
        for key in base:
            if default.get(key) is not None:
                base[key] = default[key]
        for module, override in (info.get("overrides") or {}).items():
            overrides[module] = dict(override)
    for module, override in (getattr(config, "overrides", None) or {}).items():
        merged = overrides.setdefault(module, {})
        merged.update({k: v for k, v in override.items() if v is not None})
    only_head = bool(getattr(config, "only_lm_head", False))
    return HfOptions(algorithm=algorithm, bits=int(base["bits"]), group_size=int(base["group_size"]),
                     symmetric=bool(base["symmetric"]),
                     lm_head=bool(getattr(config, "lm_head", False)) or only_head,
                     lm_head_bits=getattr(config, "lm_head_bits", None), only_lm_head=only_head,
                     embeds=bool(getattr(config, "embeds", False)), overrides=overrides, **extra)


#: What Olive's Gptq calibrates on when no data_config is given (``get_calibration_data_config``).
OLIVE_DEFAULT_CALIBRATION: dict[str, Any] = {
    "data_name": "Salesforce/wikitext", "subset": "wikitext-2-raw-v1", "split": "train[:1000]",
    "max_samples": 128, "max_seq_len": 2048}
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def calibration_source(config: CalibrationFields, context: PassContext, pass_name: str = "",
                       default: dict[str, Any] | None = None) -> Any:
    """The :class:`~olivine_weightquant.data.TextSource` a calibrated pass reads.

    Without any source (allowed only where Olive allows it: ``Gptq``, ``SelectiveMixedPrecision``)
    this is Olive's default, wikitext-2 from the hub (``default`` replaces its window counts);
    offline that is an error naming ``data_config``.
    """
    import os

    from olivine_weightquant.data import TextSource, source_from_data_config

    base = TextSource(data_files=tuple(config.data_files), data_name=config.data_name,
                      subset=config.data_subset, split=config.data_split, text_field=config.text_field,
                      max_samples=config.max_samples, max_seq_len=config.max_seq_len, seed=config.seed)
    if config.data_config:
        entry = context.data_configs.get(config.data_config)
        if entry is None:
            raise UsageError(f"data_config: no data_configs entry named {config.data_config!r}")
        return source_from_data_config(config.data_config, entry, base)
    if not config.data_files and not config.data_name:
        default = {**OLIVE_DEFAULT_CALIBRATION, **(default or {})}
        offline = [v for v in OFFLINE_ENV
                   if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
        if offline:
            raise UsageError(
                f"data_config: {pass_name or 'the pass'} has no calibration data, so it would use "
                f"Olive's default, {default['data_name']} ({default['subset']}, "
                f"{default['split']}) from the Hugging Face hub, but {offline[0]} is set (offline): "
                "set data_config (a data_configs entry) or data_files (local text files)")
        context.logger.info("no data_config: calibrating on %s (%s, %s) as Olive does",
                            default["data_name"], default["subset"], default["split"])
        return TextSource(data_name=str(default["data_name"]), subset=str(default["subset"]),
                          split=str(default["split"]), text_field="text",
                          max_samples=int(default["max_samples"]),
                          max_seq_len=int(default["max_seq_len"]), seed=config.seed)
    return base


def _hf_result(model: HfModel, context: PassContext, summary: dict[str, Any], algorithm: str,
               config: HfWeightConfig) -> HfModel:
    context.logger.info("%s: %s", algorithm, summary)
    attributes = {**model.attrs_dict(), "quantization": {"method": algorithm, "bits": config.bits,
                                                         "group_size": config.group_size,
                                                         "sym": config.sym, **summary}}
    return HfModel(path=str(context.work_dir), task=model.task, load_kwargs=model.load_kwargs,
                   attributes=attributes)


class _HfWeightPass(Pass):
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors")
    isolate: ClassVar[bool] = True
    preload: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors.torch")
    algorithm: ClassVar[str] = ""

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator, model: ModelHandle | None = None) -> list[str]:
        """Block sizes that the input model's layer widths (from its config.json) cannot take."""
        if not isinstance(model, HfModel) or not model.is_local():
            return []
        from olivine_weightquant.hf_checkpoint import read_config

        try:
            raw = read_config(Path(model.path))
        except UsageError as exc:
            return [str(exc)]
        text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
        assert isinstance(text, dict)
        widths = {"hidden_size": text.get("hidden_size"), "intermediate_size": text.get("intermediate_size")}
        heads, head_dim = text.get("num_attention_heads"), text.get("head_dim")
        if isinstance(heads, int) and isinstance(head_dim, int):
            widths["num_attention_heads x head_dim"] = heads * head_dim
        bad = [f"{n} {w}" for n, w in widths.items() if isinstance(w, int) and w % config.group_size]
        if bad:
            return [f"group_size: {config.group_size} does not divide the layer widths of {model.path} "
                    f"({', '.join(bad)}); the GPTQ checkpoint format needs whole blocks"]
        return []

    def _check_input(self, model: ModelHandle) -> HfModel:
        if not isinstance(model, HfModel):
            raise UsageError(f"{self.name} takes Hugging Face models, got a {model.kind} model")
        if model.adapter_path:
            raise UsageError(f"{self.name}: merge the LoRA adapter into the model first "
                             "(adapters are not quantized here)")
        return model


class _CalibratedPass(_HfWeightPass):
    #: whether the pass calibrates on Olive's default dataset when given none (Olive's Gptq does)
    default_calibration: ClassVar[bool] = False

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator, model: ModelHandle | None = None) -> list[str]:
        """Refuse a config without (or with two) calibration sources, or block sizes the model's
        layers cannot take."""
        return (calibration_problems(config, cls.default_calibration)
                + super().check(config, accelerator, model))

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Calibrate layer by layer and write a GPTQ-format folder into ``context.work_dir``."""
        from transformers import AutoTokenizer

        from olivine_weightquant.data import token_windows
        from olivine_weightquant.hf_quant import calibrated

        hf = self._check_input(model)
        problems = calibration_problems(config, self.default_calibration)
        if problems:
            raise UsageError(problems[0])
        source = calibration_source(config, context, self.name)
        folder = local_folder(hf)
        trust = bool(hf.load_options().get("trust_remote_code", False))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
        context.progress(0, None, f"tokenizing calibration text ({source.describe()})")
        try:
            windows = token_windows(source, tokenizer)
        except UsageError as exc:
            if config.data_config or config.data_files or config.data_name:
                raise
            raise UsageError(f"data_config: no calibration data was given, and Olive's default "
                             f"({source.describe()}) cannot be read: {exc}; set data_config (a "
                             "data_configs entry) or data_files (local text files)") from None
        summary = calibrated(folder, context.work_dir,
                             hf_options(config, self.algorithm, hf.attrs_dict()), windows,
                             progress=context.progress, trust_remote_code=trust)
        summary["calibration"] = {"windows": int(windows.shape[0]), "tokens": int(windows.numel())}
        return _hf_result(hf, context, summary, self.algorithm, config)


class Gptq(_CalibratedPass):
    """GPTQ: quantize each linear column by column, compensating errors with calibration statistics."""

    name: ClassVar[str] = "Gptq"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = GptqConfig
    algorithm: ClassVar[str] = "gptq"
    version: ClassVar[str] = "1"
    default_calibration: ClassVar[bool] = True


class GptqQuantizer(Gptq):
    """Olive's AutoGPTQ pass, run by olivine's GPTQ (no auto-gptq needed; same GPTQ-format output)."""

    name: ClassVar[str] = "GptqQuantizer"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = GptqQuantizerConfig


class GptqModel(Gptq):
    """Olive's GPTQModel pass, run by olivine's GPTQ (no gptqmodel package needed)."""

    name: ClassVar[str] = "GptqModel"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = GptqModelConfig


class Awq(_CalibratedPass):
    """AWQ: scale weight input channels by activation magnitude before rounding (folded into norms)."""

    name: ClassVar[str] = "Awq"
    aliases: ClassVar[tuple[str, ...]] = ("awq",)
    Config: ClassVar[type] = AwqConfig
    algorithm: ClassVar[str] = "awq"
    version: ClassVar[str] = "1"


class Rtn(_HfWeightPass):
    """Round-to-nearest on a Hugging Face model's linears (and embeddings); on a GPTQ folder, adds
    the LM head and embeddings (Olive's ``Rtn``)."""

    name: ClassVar[str] = "Rtn"
    aliases: ClassVar[tuple[str, ...]] = ("RtnHf", "rtn_hf")
    Config: ClassVar[type] = RtnHfConfig
    algorithm: ClassVar[str] = "rtn"
    version: ClassVar[str] = "2"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Stream the checkpoint tensor by tensor into a GPTQ-format folder."""
        from olivine_weightquant.hf_streamed import streamed

        hf = self._check_input(model)
        folder = local_folder(hf)
        options = hf_options(config, "rtn", hf.attrs_dict())
        trust = bool(hf.load_options().get("trust_remote_code", False))
        summary = streamed(folder, context.work_dir, options, progress=context.progress,
                           trust_remote_code=trust)
        return _hf_result(hf, context, summary, "rtn", config)


#: The old name of :class:`Rtn`.
RtnHf = Rtn
