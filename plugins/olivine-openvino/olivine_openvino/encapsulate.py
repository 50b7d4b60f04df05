"""``OpenVINOEncapsulation``: an ONNX model of one ``EPContext`` node that names the IR.

onnxruntime's OpenVINO execution provider reads the node's ``ep_cache_context`` (the
``.xml`` next to the ``.onnx``) and runs the IR; other providers cannot run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olivine import OnnxModel
from olivine_openvino import common
from olivine_openvino.model import OpenVINOModel
from olivine_openvino.options import EncapsulationConfig

#: OpenVINO element type names -> ONNX TensorProto names
_DTYPES = {"f32": "FLOAT", "f64": "DOUBLE", "f16": "FLOAT16", "bf16": "BFLOAT16", "i8": "INT8",
           "i16": "INT16", "i32": "INT32", "i64": "INT64", "u8": "UINT8", "u16": "UINT16",
           "u32": "UINT32", "u64": "UINT64", "boolean": "BOOL"}


def _shape(partial: Any, keep_dynamic: bool, prefix: str) -> list[Any]:
    dims: list[Any] = []
    for j, dim in enumerate(partial):
        if not dim.is_dynamic:
            dims.append(dim.get_length())
        else:
            dims.append(-1 if keep_dynamic else f"{prefix}{j}")
    return dims


def _dtype(element_type: Any) -> int:
    from onnx import TensorProto

    name = element_type.get_type_name()
    if name not in _DTYPES:
        raise ValueError(f"OpenVINO element type {name!r} has no ONNX counterpart here")
    return int(getattr(TensorProto, _DTYPES[name]))


def encapsulate(model: OpenVINOModel, config: EncapsulationConfig, out: Path) -> OnnxModel:
    """Write ``<name>.onnx`` (one EPContext node) with the IR and its side files into ``out``."""
    import onnx
    import openvino as ov
    from onnx import helper

    name = model.model_name
    ir = ov.Core().read_model(str(model.xml_file))
    version = config.ov_version or ov.get_version().split("-")[0]
    values = []
    for kind, ports in (("input", ir.inputs), ("output", ir.outputs)):
        infos = []
        for i, port in enumerate(ports):
            names = port.get_names()
            if not names:
                raise ValueError(f"{kind} {i} of {name}.xml has no name: run OpenVINOIoUpdate "
                                 "before OpenVINOEncapsulation")
            infos.append(helper.make_tensor_value_info(
                port.get_any_name(), _dtype(port.get_element_type()),
                _shape(port.get_partial_shape(), config.keep_ov_dynamic_dims, f"{kind}_{i}_")))
        values.append(infos)
    inputs, outputs = values
    node = helper.make_node(
        "EPContext", [v.name for v in inputs], [v.name for v in outputs], name="ContextNode",
        domain="com.microsoft", embed_mode=0, ep_cache_context=f"{name}.xml",
        ep_sdk_version=version, main_context=1, max_size=0, source="OpenVINOExecutionProvider",
        DeviceClass=config.target_device.upper())
    graph = helper.make_graph([node], "EP_Context_Model", inputs, outputs)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in config.opset_imports])
    proto.ir_version = 10
    onnx.save(proto, str(out / f"{name}.onnx"))
    common.link_ir(model.xml_file, out, name)
    common.copy_side_files(Path(model.path), out)
    _genai_config(out, f"{name}.onnx", config)
    attributes = {**model.attrs_dict(), "ep": "OpenVINOExecutionProvider",
                  "device": config.target_device.upper(), "sdk_version": version}
    return OnnxModel(path=str(out), onnx_file_name=f"{name}.onnx", attributes=attributes)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _genai_config(out: Path, onnx_name: str, config: EncapsulationConfig) -> None:
    """For an LLM folder (config.json + generation_config.json, optimum-intel's layout), an
    onnxruntime-genai ``genai_config.json`` whose decoder runs on the OpenVINO provider, with
    Olive's values (-1 where the model's config lacks one), then ``genai_config_override``."""
    import onnx

    cfg_file, gen_file = out / "config.json", out / "generation_config.json"
    if not (cfg_file.is_file() and gen_file.is_file()):
        return
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    gen = json.loads(gen_file.read_text(encoding="utf-8"))
    graph = onnx.load(str(out / onnx_name)).graph
    heads, hidden = cfg.get("num_attention_heads", -1), cfg.get("hidden_size", -1)
    head_size = hidden // heads if isinstance(heads, int) and isinstance(hidden, int) \
        and heads > 0 and hidden >= 0 else -1
    eos = gen.get("eos_token_id", -1)
    pad = gen.get("pad_token_id")
    if pad is None:
        pad = (eos[0] if isinstance(eos, list) and eos else eos) if eos != -1 else -1
    doc: dict[str, Any] = {
        "model": {
            "bos_token_id": cfg.get("bos_token_id", -1),
            "context_length": cfg.get("max_position_embeddings", -1),
            "decoder": {
                "session_options": {
                    "log_id": "onnxruntime-genai", "graph_optimization_level": "ORT_DISABLE_ALL",
                    "provider_options": [{"OpenVINO": {"device_type": config.target_device.upper(),
                                                       "enable_causallm": "True"}}],
                },
                "filename": onnx_name, "head_size": head_size, "hidden_size": hidden,
                "inputs": {i.name: i.name for i in graph.input if i.name != "beam_idx"},
                "outputs": {o.name: o.name for o in graph.output},
                "num_attention_heads": heads,
                "num_hidden_layers": cfg.get("num_hidden_layers", -1),
                "num_key_value_heads": cfg.get("num_key_value_heads", -1),
            },
            "eos_token_id": eos, "pad_token_id": pad, "type": cfg.get("model_type", ""),
            "vocab_size": cfg.get("vocab_size", -1),
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True,
                   "length_penalty": 1.0, "max_length": cfg.get("max_position_embeddings", -1),
                   "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }
    _merge(doc, dict(config.genai_config_override or {}))
    (out / "genai_config.json").write_text(json.dumps(doc, indent=4), encoding="utf-8")
