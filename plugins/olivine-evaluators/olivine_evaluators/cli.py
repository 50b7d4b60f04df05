"""The ``olivine benchmark`` command: latency and throughput of one model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from olivine import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``olivine benchmark``."""
    parser.add_argument("-m", "--model", required=True,
                        help="an .onnx file, a folder holding one, or a Hugging Face model folder")
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    parser.add_argument("--seq_len", "--seq-len", dest="seq_len", type=int, default=128,
                        help="tokens per sample of the random inputs (default 128)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=1,
                        help="samples per run (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice)")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="ONNX Runtime execution provider (default CPUExecutionProvider)")
    parser.add_argument("--task", default="feature-extraction",
                        help="transformers task, for Hugging Face model folders")
    parser.add_argument("--json", action="store_true", help="print JSON")


def resolve_model(path: str, task: str) -> Any:
    """The handle for ``path``: ONNX (a file or a folder with .onnx files) or Hugging Face."""
    from olivine import HfModel, OnnxModel

    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"--model: no such file or folder: {path!r}")
    if p.is_file():
        if p.suffix != ".onnx":
            raise UsageError(f"--model: {path!r} is not an .onnx file")
        return OnnxModel(path=str(p.resolve()))
    onnx_files = sorted(p.glob("*.onnx"))
    if onnx_files:
        handle = OnnxModel(path=str(p.resolve()))
        try:
            handle.model_file()
        except FileNotFoundError as exc:
            raise UsageError(f"--model: {exc}") from None
        return handle
    if (p / "config.json").is_file():
        return HfModel(path=str(p.resolve()), task=task)
    raise UsageError(f"--model: {path!r} holds no .onnx file and no Hugging Face config.json")


def handler(args: argparse.Namespace) -> int:
    """Time the model; print a table or JSON."""
    from olivine_evaluators._measure import measure, stats_ms, throughput_stats

    for name in ("runs", "batch_size", "seq_len"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    model = resolve_model(args.model, args.task)
    cfg: dict[str, Any] = {"warmup_num": max(args.warmup, 0), "repeat_test_num": args.runs,
                           "batch_size": args.batch_size, "seq_len": args.seq_len,
                           "execution_provider": args.provider}
    if args.threads:
        cfg["intra_op_num_threads"] = args.threads
    try:
        times, batch = measure(model, cfg)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        # ONNX Runtime refused the file (not a model, a missing external-data file, an
        # unknown provider): the user's input, said in one line
        message = " ".join(str(exc).split())
        raise UsageError(f"--model: ONNX Runtime cannot load or run {args.model!r}: {message}") from None
    latency = stats_ms(times)
    throughput = throughput_stats(times, batch)
    result = {"model": str(model.path), "kind": model.kind, "runs": args.runs,
              "batch_size": batch, "seq_len": args.seq_len, "provider": args.provider,
              "threads": args.threads, "latency_ms": latency,
              "throughput_samples_per_s": throughput["avg"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{model.path} ({model.kind}), batch {batch} x seq {args.seq_len}, {args.runs} runs, "
          f"{args.provider}, threads {args.threads or 'default'}")
    print("  latency ms: " + "  ".join(f"{k} {latency[k]:.2f}" for k in
                                       ("avg", "p50", "p90", "p95", "p99", "min", "max")))
    print(f"  throughput: {throughput['avg']:.1f} samples/s")
    return 0
