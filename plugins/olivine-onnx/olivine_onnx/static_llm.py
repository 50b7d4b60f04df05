"""``StaticLLM`` on one ONNX model (Olive's QNN GPU form): the batch and sequence dimensions
of ``input_ids`` become ``batch_size`` and ``context_length`` everywhere, and
``genai_config.json`` describes a one-model ``decoder-pipeline`` with a sliding window."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnx

from olivine import ModelHandle, OnnxModel, PassContext, UsageError
from olivine.onnxsave import ExternalDataOptions, save_onnx
from olivine.ortshapes import lean_shape_inference

log = logging.getLogger("olivine.pass.static_llm")


def symbolic_dims(proto: onnx.ModelProto, input_name: str) -> list[str | int]:
    """The dimensions of an input: names for symbolic ones, numbers for fixed ones."""
    for inp in proto.graph.input:
        if inp.name == input_name:
            return [d.dim_param if d.HasField("dim_param") else d.dim_value
                    for d in inp.type.tensor_type.shape.dim]
    raise UsageError(f"StaticLLM: the model has no {input_name!r} input (inputs: "
                     f"{', '.join(i.name for i in proto.graph.input)})")


def fix_dims(proto: onnx.ModelProto, mapping: dict[str, int]) -> None:
    """Each symbolic dimension of ``mapping`` fixed; output shapes inferred where they become fixed."""
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor, make_dim_param_fixed

    for name, value in mapping.items():
        make_dim_param_fixed(proto.graph, name, value)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with lean_shape_inference():  # a failure writes nothing into the cwd
            inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True,
                                                           guess_output_rank=True)
    except Exception as exc:  # shapes of the outputs stay as they were
        log.info("symbolic shape inference failed (%s); output shapes unchanged", exc)
        return
    for out, new in zip(proto.graph.output, inferred.graph.output, strict=True):
        if not is_fixed_size_tensor(out) and is_fixed_size_tensor(new):
            out.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)


def static_llm(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """The pass (single-model form)."""
    if not isinstance(model, OnnxModel):
        raise UsageError(f"StaticLLM takes one ONNX model here, got a {model.kind} model")
    proto = onnx.load(str(model.model_file()), load_external_data=True)
    dims = symbolic_dims(proto, "input_ids")
    if len(dims) != 2 or not all(isinstance(d, str) and d for d in dims):
        raise UsageError(f"StaticLLM: input_ids must have two symbolic dimensions (batch, "
                         f"sequence) before they are fixed, got {dims}")
    batch, sequence = str(dims[0]), str(dims[1])
    fix_dims(proto, {batch: config.batch_size, sequence: config.context_length})
    options = ExternalDataOptions(save_as_external_data=True, external_data_name="model.onnx.data")
    out = save_onnx(proto, context.work_dir, options, file_name="model.onnx", source=model,
                    static_shapes={"batch_size": config.batch_size,
                                   "context_length": config.context_length})
    genai = model.model_file().parent / "genai_config.json"
    if genai.is_file():
        write_genai_config(genai, context.work_dir / "genai_config.json", proto, config)
    return out


def write_genai_config(src: Path, dest: Path, proto: onnx.ModelProto, config: Any) -> None:
    """The genai config of a one-model ``decoder-pipeline`` with a left-aligned sliding window
    of ``context_length`` on the QNN GPU backend."""
    cfg = json.loads(src.read_text())
    model_cfg = cfg.setdefault("model", {})
    model_cfg["type"] = "decoder-pipeline"
    decoder = model_cfg.setdefault("decoder", {})
    decoder.setdefault("session_options", {})["provider_options"] = [{"qnn": {"backend_type": "gpu"}}]
    decoder.get("sliding_window", {}).pop("slide_inputs", None)
    extra = {"inputs": {"past_sequence_length": "past_seq_len",
                        "total_sequence_length": "total_seq_len"},
             "sliding_window": {"window_size": config.context_length, "pad_value": 0,
                                "alignment": "left", "slide_key_value_cache": False}}
    for key, value in extra.items():
        if isinstance(decoder.get(key), dict):
            decoder[key].update(value)
        else:
            decoder[key] = value
    inits = {t.name for t in proto.graph.initializer}
    decoder["pipeline"] = [{"model_onnx": {
        "filename": "model.onnx",
        "inputs": [i.name for i in proto.graph.input if i.name not in inits],
        "outputs": [o.name for o in proto.graph.output]}}]
    dest.write_text(json.dumps(cfg, indent=4))


