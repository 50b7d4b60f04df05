"""The work of the INC passes: graph optimization, calibration, onnx-neural-compressor, saving.

Imported when a pass runs; onnx, onnxruntime and onnx_neural_compressor are imported inside
the functions.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs

from olivine import ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine.onnxsave import save_onnx
from olivine_inc.options import BACKENDS, IncDynamicConfig, IncStaticConfig, _woq, metric_goal

log = logging.getLogger("olivine.pass.inc")

INSTALL_HINT = ("pip install 'olivine-inc[inc]' (onnx-neural-compressor 1.0 and the modules it "
                "imports: prettytable, scipy, py-cpuinfo)")
#: Op types whose first/last node the first/last_conv_or_matmul_quantization recipes keep float.
CONV_OR_MATMUL = ("Conv", "MatMul", "Gemm", "FusedConv")


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _import_inc() -> Any:
    try:
        import onnx_neural_compressor
        from onnx_neural_compressor.quantization import algorithm_entry  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the INC passes need onnx-neural-compressor ({exc}); {INSTALL_HINT}. "
                         "neural-compressor itself cannot serve: its ONNX Runtime API "
                         "(quantization.fit) left it in 3.8, and 2.x-3.7 need numpy<2 and "
                         "onnx.mapping (gone since onnx 1.19)") from None
    return onnx_neural_compressor


def is_nlp(path: Path) -> bool:
    """INC's ``domain: auto`` detection: word embeddings, 2-D inputs, Attention or LSTM ops."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if any(re.search("word.*embedding", i.name) for i in graph.initializer):
        return True
    inits = {i.name for i in graph.initializer}
    ranks = [len(i.type.tensor_type.shape.dim) for i in graph.input if i.name not in inits]
    if len(ranks) > 1 and all(r == 2 for r in ranks):
        return True
    return any(n.op_type in ("Attention", "LSTM") for n in graph.node)


def optimization_level(config: IncDynamicConfig, source: Path) -> str:
    """The recipe's graph_optimization_level, else ENABLE_EXTENDED for NLP models, else BASIC."""
    level = config.recipes.get("graph_optimization_level")
    if level:
        return str(level)
    nlp = config.domain == "nlp" or (config.domain == "auto" and is_nlp(source))
    return "ENABLE_EXTENDED" if nlp else "ENABLE_BASIC"


def optimize(source: Path, level: str, folder: Path, provider: str) -> Path:
    """ONNX Runtime's graph optimization of ``source`` at ``level``, saved into ``folder``."""
    if level == "DISABLE_ALL":
        return source
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               "ORT_" + level)
    target = folder / "optimized.onnx"
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                     "optimized.onnx.data")
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=[provider])
    return target


def name_nodes(path: Path, folder: Path) -> Path:
    """``path``, or a copy in ``folder`` where every node has a name of its own.

    onnx-neural-compressor keys nodes by name: the unnamed Cast nodes that
    OrtTransformersOptimization leaves before EmbedLayerNormalization were removed together
    (an invalid model) or broke SmoothQuant (KeyError 'input_ids').
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in proto.graph.node]
    if all(names) and len(set(names)) == len(names):
        return path
    proto = onnx.load(str(path), load_external_data=True)
    taken = set(names)
    seen: set[str] = set()
    for index, node in enumerate(proto.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        name = f"{node.op_type}_olivine_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        seen.add(name)
    target = folder / "named.onnx"
    onnx.save(proto, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
              location="named.onnx.data", size_threshold=1024)
    return target


def excluded_nodes(config: IncDynamicConfig, path: Path) -> list[str]:
    """Names of the first/last Conv/MatMul/Gemm nodes the recipes keep in float."""
    import onnx

    nodes = [n for n in onnx.load(str(path), load_external_data=False).graph.node
             if n.op_type in CONV_OR_MATMUL and n.name]
    out = []
    if nodes and config.recipes.get("first_conv_or_matmul_quantization") is False:
        out.append(nodes[0].name)
    if nodes and config.recipes.get("last_conv_or_matmul_quantization") is False:
        out.append(nodes[-1].name)
    return out


def _reader(model: OnnxModel, config: IncStaticConfig, context: PassContext) -> Any:
    """An onnx-neural-compressor CalibrationDataReader over the data config's samples."""
    from onnx_neural_compressor.data_reader import CalibrationDataReader

    from olivine_quantization.calibration import make_reader

    sizes = config.calibration_sampling_size
    samples = sizes[0] if isinstance(sizes, list) else sizes
    shim = attrs.make_class("CalibrationOptions", ["data_config", "calibration_file",
                                                   "calibration_samples", "calibration_seq_len",
                                                   "tokenizer"])(
        config.data_config, None, samples, 128, None)
    feeds = make_reader(model, shim, context).feeds

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.position = 0

        def get_next(self) -> dict[str, Any] | None:
            if self.position >= len(feeds):
                return None
            self.position += 1
            return feeds[self.position - 1]

        def rewind(self) -> None:
            self.position = 0

        def __len__(self) -> int:
            return len(feeds)

    return Reader()


def _extra_options(config: IncDynamicConfig) -> dict[str, Any]:
    recipes = config.recipes
    extra: dict[str, Any] = {}
    if "add_qdq_pair_to_weight" in recipes:
        extra["AddQDQPairToWeight"] = bool(recipes["add_qdq_pair_to_weight"])
    if "dedicated_qdq_pair" in recipes:
        extra["DedicatedQDQPair"] = bool(recipes["dedicated_qdq_pair"])
    if "optypes_to_exclude_output_quant" in recipes:
        extra["OpTypesToExcludeOutputQuantization"] = list(
            recipes["optypes_to_exclude_output_quant"])
    return extra


def _quantize_activations(source: Path, target: Path, config: IncDynamicConfig, provider: str,
                          exclude: list[str], reader: Any) -> None:
    from onnx_neural_compressor.quantization import algorithm_entry as algos
    from onnx_neural_compressor.quantization import config as inc
    from onnxruntime.quantization import QuantFormat

    common = {"reduce_range": config.reduce_range, "nodes_to_exclude": list(exclude),
              "extra_options": _extra_options(config), "execution_provider": provider,
              "use_external_data_format": True}
    if config.approach == "dynamic":
        cfg: Any = inc.DynamicQuantConfig(**common)
        _need_ops(cfg, provider, "dynamic")
        algos.dynamic_quantize_entry(str(source), cfg, model_output=str(target))
        return
    assert isinstance(config, IncStaticConfig)
    static = {**common, "calibration_data_reader": reader,
              "quant_format": QuantFormat[config.quant_format],
              "calibration_sampling_size": len(reader)}
    if config.quant_format == "QOperator":
        static["op_types_to_quantize"] = qoperator_op_types(provider)
    if config.recipes.get("smooth_quant"):
        args = dict(config.recipes.get("smooth_quant_args") or {})
        cfg = inc.SmoothQuantConfig(**args, **static)
        _need_ops(cfg, provider, "static")
        algos.smooth_quant_entry(str(source), cfg, reader, model_output=str(target))
    else:
        cfg = inc.StaticQuantConfig(**static)
        _need_ops(cfg, provider, "static")
        algos.static_quantize_entry(str(source), cfg, reader, model_output=str(target))


def qoperator_op_types(provider: str) -> list[str]:
    """onnx-neural-compressor's QOperator op types for ``provider``, without Gather.

    Its QOperator Gather quantizes the table with other parameters than the DequantizeLinear
    after it uses: on the tiny BERT the token-type table (values within +-0.039) came back with
    errors up to 0.067 and the model's output cosine fell to 0.56 (0.99999 without Gather).
    Embedding lookups therefore stay float; every other op type of its list is quantized.
    """
    from onnx_neural_compressor import constants

    return [t for t in constants.STATIC_QOPERATOR_OP_LIST_MAP.get(provider, []) if t != "Gather"]


def _need_ops(cfg: Any, provider: str, mode: str) -> None:
    # onnx-neural-compressor calls exit(0) when it has no op type to quantize
    if not cfg.op_types_to_quantize:
        raise UsageError(f"backend: onnx-neural-compressor has no {mode} quantization op list "
                         f"for {provider}")


def _quantize_weights(source: Path, target: Path, config: IncDynamicConfig, provider: str,
                      exclude: list[str], reader: Any) -> None:
    import onnx
    from onnx_neural_compressor.quantization import algorithm_entry as algos
    from onnx_neural_compressor.quantization import config as inc

    woq = _woq(config)
    kwargs = {"weight_bits": int(woq["bits"]), "weight_group_size": int(woq["group_size"]),
              "weight_sym": woq["scheme"] == "sym", "providers": [provider]}
    algorithm = woq["algorithm"]
    if algorithm == "RTN":
        proto = algos.rtn_quantize_entry(str(source), inc.RTNConfig(**kwargs))
    elif algorithm == "GPTQ":
        proto = algos.gptq_quantize_entry(str(source), inc.GPTQConfig(**kwargs), reader)
    else:
        proto = algos.awq_quantize_entry(str(source), inc.AWQConfig(**kwargs), reader)
    repack_zero_points(proto)
    if exclude:
        log.info("weight_only: the first/last Conv/MatMul recipes do not apply to weight-only "
                 "quantization")
    onnx.save(proto, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
              location=target.name + ".data")


def repack_zero_points(proto: Any) -> int:
    """Give 4-bit MatMulNBits zero points ONNX Runtime's row-wise packing; returns how many.

    onnx-neural-compressor 1.0 packs the N x blocks 4-bit zero points as one flat nibble
    stream; ONNX Runtime wants each of the N rows to start on a new byte. The two agree when the
    number of blocks per row is even; otherwise ONNX Runtime refuses the model ("zero_points
    initializer shape {16} does not match attribute-derived shape [32]").
    """
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    fixed = 0
    for node in proto.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 4 or node.input[3] not in inits:
            continue
        attrs_ = {a.name: a.i for a in node.attribute}
        if attrs_.get("bits", 4) != 4:
            continue
        rows, blocks = attrs_["N"], -(-attrs_["K"] // attrs_["block_size"])
        tensor = inits[node.input[3]]
        flat = numpy_helper.to_array(tensor).reshape(-1)
        if blocks % 2 == 0 or flat.size != (rows * blocks + 1) // 2:
            continue
        nibbles = np.stack([flat & 0x0F, flat >> 4], axis=1).reshape(-1)[:rows * blocks]
        grid = np.full((rows, blocks + 1), 8, dtype=np.uint8)
        grid[:, :blocks] = nibbles.reshape(rows, blocks)
        packed = (grid[:, 0::2] | (grid[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
        tensor.CopyFrom(numpy_helper.from_array(packed, tensor.name))
        fixed += 1
    return fixed


def quantize(model: ModelHandle, config: IncDynamicConfig, static_pass: bool,
             context: PassContext) -> OnnxModel:
    """Quantize ``model`` as ``config`` says into ``context.work_dir``."""
    import onnx
    import onnxruntime as ort

    from olivine_quantization.work import count_quant_ops

    if not isinstance(model, OnnxModel):
        raise UsageError(f"the INC passes take ONNX models, got a {model.kind} model")
    problems = config.problems(static_pass)
    if problems:
        raise UsageError("; ".join(problems))
    _import_inc()
    provider = BACKENDS[config.backend]
    if provider not in ort.get_available_providers():
        raise UsageError(f"backend: {config.backend} needs {provider}, which this onnxruntime "
                         f"does not have (available: {', '.join(ort.get_available_providers())})")
    if config.metric is not None and metric_goal(config.metric) is None:
        context.logger.warning("metric has no goal: quantizing once, without accuracy-aware "
                               "tuning (as Olive)")
    keep = config.workspace is not None
    scratch = Path(config.workspace or tempfile.mkdtemp(prefix=".inc-", dir=context.work_dir))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        source = model.model_file()
        level = "DISABLE_ALL" if config.approach == "weight_only" else optimization_level(
            config, source)
        context.progress(0, 3, f"optimizing the graph ({level})")
        optimized = name_nodes(optimize(source, level, scratch, provider), scratch)
        exclude = excluded_nodes(config, optimized)
        reader = None
        if isinstance(config, IncStaticConfig) and config.data_config is not None and (
                config.approach == "static" or _woq(config)["algorithm"] != "RTN"):
            context.progress(1, 3, "loading calibration data")
            reader = _reader(model, config, context)
        context.progress(1, 3, f"quantizing ({config.approach})")
        target = scratch / "quantized.onnx"
        work = _quantize_weights if config.approach == "weight_only" else _quantize_activations
        try:
            work(optimized, target, config, provider, exclude, reader)
        except (UsageError, OlivineError):
            raise
        except Exception as exc:
            raise OlivineError(f"onnx-neural-compressor {config.approach} quantization of "
                               f"{Path(model.path).name} failed: {type(exc).__name__}: "
                               f"{exc}") from exc
        counts = count_quant_ops(target)
        nbits = sum(1 for n in onnx.load(str(target), load_external_data=False).graph.node
                    if n.op_type == "MatMulNBits")
        if nbits:
            counts["MatMulNBits"] = nbits
        if not counts:
            raise OlivineError(f"{config.approach} quantization left {source.name} without any "
                               "quantized op")
        summary = {"approach": config.approach, "backend": config.backend,
                   "graph_optimization_level": level, "excluded_nodes": exclude,
                   "quantized_ops": counts,
                   "onnx_neural_compressor": _version("onnx-neural-compressor")}
        if keep:
            (scratch / "inc_quantization.json").write_text(json.dumps(summary, indent=2))
        context.progress(2, 3, "saving")
        proto = onnx.load(str(target), load_external_data=True)
        attributes: dict[str, Any] = {"quantization": f"inc-{config.approach}",
                                      "quantized_ops": counts}
        if isinstance(config, IncStaticConfig) and config.approach == "static":
            attributes["quant_format"] = config.quant_format
        result = save_onnx(proto, context.work_dir, config, source=model, **attributes)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(result.model_file()), options, providers=[provider])
    except Exception as exc:
        raise OlivineError(f"the INC-quantized model does not load in ONNX Runtime: "
                           f"{str(exc).strip().splitlines()[-1]}") from exc
    context.progress(3, 3, "done")
    return result
