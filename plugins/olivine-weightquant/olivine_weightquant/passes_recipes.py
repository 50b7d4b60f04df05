"""The passes Olive's LLM recipes use around RTN and GPTQ.

``SelectiveMixedPrecision`` (Hugging Face -> Hugging Face, files unchanged: it adds the
``mixed_precision_info`` attribute the next quantization passes read),
``OnnxKQuantQuantization`` (ONNX MatMul -> MatMulNBits by k-quant) and
``MatMulNBitsToQDQ`` (MatMulNBits -> DequantizeLinear + MatMul).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine import Accelerator, HfModel, ModelHandle, Pass, PassContext, UsageError
from olivine_weightquant.config_recipes import (
    K_QUANT,
    MatMulNBitsToQdqConfig,
    OnnxKQuantConfig,
    SelectiveMixedPrecisionConfig,
)

#: Olive's calibration default for kld_gradient (``get_calibration_dataset(max_seq_len=512,
#: max_samples=256)``): wikitext-2 from the hub.
KLD_DEFAULT_WINDOWS = {"max_samples": 256, "max_seq_len": 512}


class SelectiveMixedPrecision(Pass):
    """Choose the modules that keep ``high_bits`` (Olive's algorithms); the next passes honour it."""

    name: ClassVar[str] = "SelectiveMixedPrecision"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = SelectiveMixedPrecisionConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator, model: ModelHandle | None = None) -> list[str]:
        """Refuse two calibration sources (kld_gradient)."""
        from olivine_weightquant.config import calibration_problems

        if config.algorithm != "kld_gradient":
            return []
        return calibration_problems(config, default_allowed=True)

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Score or place the modules; return the input model with ``mixed_precision_info``."""
        if not isinstance(model, HfModel):
            raise UsageError(f"{self.name} takes Hugging Face models, got a {model.kind} model")
        for option in config.unused_options():
            context.logger.warning("%s: not used by the %s algorithm (Olive ignores it too)",
                                   option, config.algorithm)
        if config.algorithm == "kld_gradient" and config.kld_memory_mode in ("multi_gpu", "offload"):
            context.logger.warning("kld_memory_mode %s: needs CUDA devices; on the CPU it runs as "
                                   "full (the same scores, as Olive computes them on the CPU)",
                                   config.kld_memory_mode)
        if config.algorithm in K_QUANT:
            info = self._k_quant(model, config)
        else:
            info = self._scored(model, config, context)
        high = sorted(n for n, o in info["overrides"].items() if o.get("bits") == config.high_bits)
        context.logger.info("%s: %d modules at %d bits: %s", config.algorithm, len(high),
                            config.high_bits, ", ".join(high))
        attributes = {**model.attrs_dict(), "mixed_precision_info": info}
        return attrs.evolve(model, attributes=attributes)

    @staticmethod
    def _structure(model: HfModel, weights: bool) -> Any:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from olivine_weightquant.mixed import Structure
        from olivine_weightquant.passes import local_folder

        trust = bool(model.load_options().get("trust_remote_code", False))
        if weights:
            folder = local_folder(model)
            net = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                       trust_remote_code=trust)
            hf_config = net.config
        else:
            try:
                hf_config = AutoConfig.from_pretrained(model.path, trust_remote_code=trust)
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read the config of {model.path}: {exc}") from None
            with torch.device("meta"):
                net = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust)
        text = getattr(hf_config, "get_text_config", lambda: hf_config)()
        return Structure(net.eval(), bool(getattr(text, "tie_word_embeddings", False)))

    def _k_quant(self, model: HfModel, config: Any) -> dict[str, Any]:
        from olivine_weightquant.mixed import k_quant

        return k_quant(self._structure(model, weights=False), config.algorithm, config.bits,
                       config.high_bits)

    def _scored(self, model: HfModel, config: Any, context: PassContext) -> dict[str, Any]:
        import torch

        from olivine_weightquant.mixed import scored

        structure = self._structure(model, weights=True)
        windows = None
        if config.algorithm == "kld_gradient":
            from transformers import AutoTokenizer

            from olivine_weightquant.data import token_windows
            from olivine_weightquant.passes import calibration_source, local_folder

            source = calibration_source(config, context, self.name, KLD_DEFAULT_WINDOWS)
            tokenizer = AutoTokenizer.from_pretrained(str(local_folder(model)))
            context.progress(0, None, f"tokenizing calibration text ({source.describe()})")
            windows = token_windows(source, tokenizer)
        high_group = config.high_group_size if config.high_group_size is not None else config.group_size
        high_sym = config.high_sym if config.high_sym is not None else config.sym
        with torch.enable_grad():
            return scored(structure, config.algorithm, bits=config.bits, group_size=config.group_size,
                          sym=config.sym, high_bits=config.high_bits, high_group_size=high_group,
                          high_sym=high_sym, ratio=config.ratio, windows=windows,
                          progress=context.progress)


class OnnxKQuantQuantization(Pass):
    """K-quant (llama.cpp's weighted least squares) of MatMul weights to MatMulNBits, with zero points."""

    name: ClassVar[str] = "OnnxKQuantQuantization"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = OnnxKQuantConfig
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "torch", "numpy")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Quantize every MatMul with a constant 2-D float weight (per-node settings applied)."""
        import onnx

        from olivine.onnxsave import save_onnx
        from olivine_weightquant.core import kquant
        from olivine_weightquant.onnx_nbits import Candidate, Selection, quantize_onnx
        from olivine_weightquant.passes import _onnx_source

        _, source = _onnx_source(model, self.name)
        custom = config.customized_weight_config or {}

        def settings(cand: Candidate) -> tuple[int, int]:
            entry = custom.get(cand.node.name) or {}
            return int(entry.get("bits", config.bits)), int(entry.get("group_size", config.block_size))

        def quantize(w: Any, bits: int, block_size: int) -> Any:
            return kquant(w, bits, block_size)

        selection = Selection(("MatMul",), (), tuple(config.nodes_to_exclude or ()))
        with tempfile.TemporaryDirectory(dir=context.work_dir.parent) as tmp:
            written = quantize_onnx(source, Path(tmp), quantize, bits=config.bits,
                                    block_size=config.block_size, accuracy_level=config.accuracy_level,
                                    selection=selection, progress=context.progress, settings=settings)
            unknown = sorted(set(custom) - _node_names(written))
            if unknown:
                context.logger.warning("customized_weight_config: no quantized node named %s",
                                       ", ".join(unknown))
            proto = onnx.load(str(written), load_external_data=True)
        return save_onnx(proto, context.work_dir, config, file_name=source.name, source=model,
                         weight_bits=config.bits, weight_block_size=config.block_size,
                         weight_quantization=self.name)


def _node_names(path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {n.name[: -len(f"_Q{b}")] for n in graph.node if n.op_type == "MatMulNBits"
            for b in (4, 8) if n.name.endswith(f"_Q{b}")}


class MatMulNBitsToQDQ(Pass):
    """Rewrite MatMulNBits as DequantizeLinear (blocked, int4/uint4/int8/uint8) + MatMul."""

    name: ClassVar[str] = "MatMulNBitsToQDQ"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = MatMulNBitsToQdqConfig
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "numpy")
    isolate: ClassVar[bool] = False
    version: ClassVar[str] = "1"

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Convert every MatMulNBits with constant inputs (not in ``nodes_to_exclude``)."""
        import onnx

        from olivine.onnxsave import save_onnx
        from olivine_weightquant.passes import _onnx_source
        from olivine_weightquant.qdq import to_qdq

        onnx_model, source = _onnx_source(model, self.name)
        proto = onnx.load(str(source), load_external_data=True)
        report = to_qdq(proto, config)
        for name, why in report.skipped:
            context.logger.warning("%s left as MatMulNBits: %s", name, why)
        if not report.converted:
            context.logger.warning("no MatMulNBits node to convert: the model is passed on unchanged")
            return onnx_model
        context.logger.info("converted %d MatMulNBits nodes to DequantizeLinear + MatMul",
                            report.converted)
        return save_onnx(proto, context.work_dir, config, file_name=source.name, source=model)
