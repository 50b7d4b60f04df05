"""Running an OpenVINO IR on the OpenVINO runtime, for the evaluators' metrics.

``OpenVINOModel.make_runner`` returns an :class:`OpenVINORunner`: numpy feeds in,
``{output_name: array}`` out, like the evaluators' ONNX Runtime runner, so latency,
throughput and accuracy metrics measure the IR with OpenVINO itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: user_config keys this runner reads (others are the ONNX Runtime runner's and are refused)
RUNNER_KEYS = ("ov_device", "inference_num_threads")
_ORT_ONLY = ("execution_provider", "intra_op_num_threads", "inter_op_num_threads",
             "graph_optimization_level", "inference_settings", "io_bind")
_NP = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)",
       "i64": "tensor(int64)", "i32": "tensor(int32)", "boolean": "tensor(bool)"}


class OpenVINORunner:
    """An IR compiled on ``device`` (CPU by default) and one infer request over it.

    Stateful LLM IRs (optimum-intel's, with ``beam_idx``) have their state reset before each
    run, so every run sees only its own feeds.
    """

    kind = "openvino"

    def __init__(self, xml: Path, user_config: Mapping[str, Any] | None = None) -> None:
        import openvino as ov

        from olivine import UsageError

        cfg = dict(user_config or {})
        given = [k for k in _ORT_ONLY if cfg.get(k)]
        if given:
            raise UsageError(f"user_config.{given[0]}: an ONNX Runtime setting; an OpenVINO IR "
                             "runs on the OpenVINO runtime (its settings: "
                             f"{', '.join(RUNNER_KEYS)})")
        core = ov.Core()
        self.model = core.read_model(str(xml))
        config: dict[str, Any] = {}
        if cfg.get("inference_num_threads"):
            config["INFERENCE_NUM_THREADS"] = int(cfg["inference_num_threads"])
        self.compiled = core.compile_model(self.model, str(cfg.get("ov_device", "CPU")).upper(),
                                           config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.model.inputs]
        self.output_names = [p.get_any_name() for p in self.model.outputs]
        self.stateful = bool(self.model.get_sinks()) or "beam_idx" in self.input_names
        self.path = xml.parent
        self.vocab_size = _vocab(xml.parent)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Infer once; return every output by name."""
        inputs = dict(feeds)
        if self.stateful:
            self.request.reset_state()
            if "beam_idx" in self.input_names and "beam_idx" not in inputs:
                first = next(iter(inputs.values()))
                inputs["beam_idx"] = np.arange(first.shape[0], dtype=np.int32)
        if "position_ids" in self.input_names and "position_ids" not in inputs \
                and "input_ids" in inputs:
            ids = inputs["input_ids"]
            inputs["position_ids"] = np.broadcast_to(np.arange(ids.shape[-1]), ids.shape).astype(np.int64)
        result = self.request.infer({k: v for k, v in inputs.items() if k in self.input_names})
        return {port.get_any_name(): np.asarray(value) for port, value in result.items()}

    def input_spec(self, batch_size: int, seq_len: int) -> dict[str, tuple[list[int], str]]:
        """Each input's shape (dynamic dims: batch, then sequence length) and ONNX type name."""
        spec = {}
        for port in self.model.inputs:
            dims = []
            for i, dim in enumerate(port.get_partial_shape()):
                dims.append(dim.get_length() if not dim.is_dynamic else
                            (batch_size if i == 0 else seq_len))
            spec[port.get_any_name()] = (dims, _NP.get(port.get_element_type().get_type_name(),
                                                       "tensor(float)"))
        return spec


def _vocab(folder: Path, default: int = 1000) -> int:
    try:
        return int(json.loads((folder / "config.json").read_text()).get("vocab_size") or default)
    except (OSError, ValueError, TypeError):
        return default
