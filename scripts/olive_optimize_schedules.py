"""Write tests/cli/olive_0_13_optimize_schedules.json: the passes Olive 0.13's ``optimize`` schedules.

Run it with the Python of a scratch venv that has ``olive-ai==0.13.0`` installed (never a
project dependency)::

    /tmp/olive-venv/bin/python scripts/olive_optimize_schedules.py

For a grid of flag combinations (every provider x precision x exporter for a Hugging Face
model and for an ONNX model, then single-flag variations: QDQ, activation precision, block
sizes, splits, fixed shapes, surgeries, AOT, device), it parses the flags with Olive's own
parser and asks Olive's ``OptimizeCommand`` for its pass schedule, the systems section and
whether it adds its calibration data config (what ``olive optimize --dry_run`` writes, without
a model: the model kind is set directly). A combination Olive refuses records the refusal.
``tests/cli/test_optimize_schedule.py`` replays every case on olivine.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "cli" / "olive_0_13_optimize_schedules.json"
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "QNNExecutionProvider",
             "VitisAIExecutionProvider", "OpenVINOExecutionProvider", "WebGpuExecutionProvider",
             "NvTensorRTRTXExecutionProvider")
PRECISIONS = ("int4", "int8", "int16", "int32", "uint4", "uint8", "uint16", "uint32", "fp16",
              "fp32", "bf16")
EXPORTERS = (None, "model_builder", "dynamo_exporter", "torchscript_exporter", "optimum_exporter")
VARIATIONS: tuple[tuple[str, ...], ...] = (
    ("--use_qdq_format",), ("--act_precision", "uint16"), ("--act_precision", "int8"),
    ("--block_size", "-1"), ("--block_size", "64"), ("--block_size", "100"), ("--num_split", "2"),
    ("--memory", "4096"), ("--dim_param", "batch_size,sequence_length", "--dim_value", "1,128"),
    ("--surgeries", "RemoveRopeMultiCache,AttentionMaskToSequenceLengths"), ("--device", "npu"),
    ("--device", "gpu"), ("--device", "cpu"), ("--enable_aot", "--qnn_env_path", "qnn-env"),
    ("--enable_aot",), ("--num_split", "4", "--enable_aot", "--qnn_env_path", "qnn-env"),
    ("--use_qdq_format", "--act_precision", "uint16", "--block_size", "-1"),
)
VARIATION_BASES = (("CPUExecutionProvider", "int4"), ("CPUExecutionProvider", "int8"),
                   ("QNNExecutionProvider", "int4"), ("QNNExecutionProvider", "uint8"),
                   ("VitisAIExecutionProvider", "int4"), ("OpenVINOExecutionProvider", "int4"),
                   ("CUDAExecutionProvider", "fp16"), ("WebGpuExecutionProvider", "int4"))


def schedule(argv: list[str], kind: str) -> dict[str, Any]:
    """Olive's answer for the flags ``argv`` on a model of ``kind`` (hf or onnx)."""
    from olive.cli.launcher import get_cli_parser
    from olive.cli.optimize import OptimizeCommand

    parser = get_cli_parser()
    args = parser.parse_args(["optimize", "-m", "model", *argv])
    command = OptimizeCommand(parser, args)
    command.is_hf_model = kind == "hf"
    try:
        command._validate_arguments()
        passes = command._build_passes_config()
        config: dict[str, Any] = {"systems": {}}
        command._update_system_config(config)
    except ValueError as exc:
        return {"error": str(exc)}
    return {"passes": [[name, value] for name, value in passes.items()],
            "systems": config["systems"], "target": config["target"],
            "calibration_data": command.need_wikitext_data_config}


def cases() -> list[dict[str, Any]]:
    """Every combination, as ``{"model", "argv"}``."""
    out: list[dict[str, Any]] = []
    for kind in ("hf", "onnx"):
        exporters = EXPORTERS if kind == "hf" else (None,)
        for provider, precision, exporter in itertools.product(PROVIDERS, PRECISIONS, exporters):
            argv = ["--provider", provider, "--precision", precision]
            if exporter:
                argv += ["--exporter", exporter]
            out.append({"model": kind, "argv": argv})
        for (provider, precision), extra in itertools.product(VARIATION_BASES, VARIATIONS):
            out.append({"model": kind, "argv": ["--provider", provider, "--precision", precision,
                                                 *extra]})
    out.append({"model": "hf", "argv": []})  # Olive's defaults
    out.append({"model": "onnx", "argv": []})
    return out


def main() -> int:
    """Write the file."""
    import olive

    answers: list[str] = []  # distinct answers, each once; a case names its answer's index
    rows = []
    for case in cases():
        text = json.dumps(schedule(case["argv"], case["model"]), sort_keys=True)
        if text not in answers:
            answers.append(text)
        rows.append(json.dumps({**case, "answer": answers.index(text)}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    how = ("scripts/olive_optimize_schedules.py in a venv with olive-ai==0.13.0: Olive's "
           "OptimizeCommand._build_passes_config() for each case")
    with OUT.open("w", encoding="utf-8") as f:
        f.write(f'{{"olive_version": {json.dumps(olive.__version__)},\n "how": {json.dumps(how)},\n')
        f.write(' "answers": [\n' + ",\n".join("  " + a for a in answers) + "\n ],\n")
        f.write(' "cases": [\n' + ",\n".join("  " + r for r in rows) + "\n ]}\n")
    errors = sum('"error"' in a for a in answers)
    print(f"wrote {OUT}: {len(rows)} cases, {len(answers)} distinct answers ({errors} refusals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
