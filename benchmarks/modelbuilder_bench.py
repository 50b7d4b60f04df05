"""auto-opt int4 on a Qwen2.5-0.5B-shaped model: olivine against the builder called directly.

The model has Qwen2.5-0.5B's exact architecture (hidden 896, intermediate 4864, 24
layers, 14 heads, 2 kv heads, vocab 151936, tied embeddings) with random bf16
weights, built here (no download), plus a tokenizer trained on the Sonnets. For each
way of converting, a fresh process is timed and its peak RSS (the largest process of
its tree, from getrusage) recorded:

- ``olivine``: ``olivine auto-opt --precision int4`` (its CPU defaults: block 128, rtn_last);
- ``olivine_b32``: olivine's ModelBuilder pass at Olive's defaults (block 32, all 4-bit);
- ``builder``: the builder called directly at its defaults (what Olive's auto-opt runs);
- ``builder_rtn_last``: the builder called directly with auto-opt's options.

Then onnxruntime-genai's decode speed of the int4 outputs is measured (greedy, 128 new
tokens, median of runs). A 2-layer model of the same width shows olivine's own overhead
on top of the builder.

    python benchmarks/modelbuilder_bench.py [--work DIR] [--threads 2] [--repeat 3] [--skip-direct]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QWEN_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
            "tie_word_embeddings": True, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}


def build_model(folder: Path, layers: int) -> Path:
    """Save a random bf16 Qwen2 of the 0.5B shape (``layers`` decoder layers) with a tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from olivine_modelbuilder.tinymodel import train_tokenizer

    if (folder / "config.json").exists():
        return folder
    tok = train_tokenizer()
    config = Qwen2Config(**{**QWEN_05B, "num_hidden_layers": layers},
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.no_grad():
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.config.torch_dtype = "bfloat16"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return folder


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of the largest process in ``cmd``'s tree."""
    code = ("import resource, subprocess, sys, time, json\n"
            "t0 = time.perf_counter()\n"
            "r = subprocess.run(sys.argv[1:])\n"
            "wall = time.perf_counter() - t0\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20\n"
            "print(json.dumps({'rc': r.returncode, 'wall': wall, 'peak': peak}))\n")
    out = subprocess.run([sys.executable, "-c", code, *cmd], env=env, capture_output=True,
                         text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if data["rc"]:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return data["wall"], data["peak"]


def decode_speed(folder: Path, threads: int, runs: int = 3) -> float:
    """Median decode tokens/s of greedy generation (128 new tokens) in onnxruntime-genai."""
    from olivine_modelbuilder.generate import generate, load_model

    model, tokenizer, cfg = load_model(folder, threads)
    ids = [int(i) for i in tokenizer.encode("Shall I compare thee to a summer's day?")]
    speeds = []
    for _ in range(runs):
        result = generate(model, tokenizer, cfg, ids, len(ids) + 129)
        speeds.append(result.decode_tokens_per_s)
    return statistics.median(speeds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="olivine-mb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    big = build_model(work / "qwen05b", 24)
    small = build_model(work / "qwen05b-2layers", 2)
    results["model_build_s"] = round(time.perf_counter() - t0, 1)
    olivine = [sys.executable, "-m", "olivine", "auto-opt", "--precision", "int4", "--device", "cpu",
               "--provider", "CPUExecutionProvider", "--log_level", "3"]
    builder = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-p", "int4", "-e", "cpu"]
    auto_opt_extra = ["--extra_options", "block_size=128", "algo_config=rtn_last"]
    tools = ["olivine", "olivine_b32"] + ([] if args.skip_direct else ["builder", "builder_rtn_last"])
    for name, model in (("0.5b", big), ("2-layer", small)):
        runs: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
        for rep in range(args.repeat):
            # alternate the order, so that no tool always gets the warmer page cache
            for tool in tools if rep % 2 == 0 else tools[::-1]:
                out = work / f"{tool}-{name}"
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(work / f"cache-{name}", ignore_errors=True)
                if tool == "olivine":
                    cmd = [*olivine, "-m", str(model), "-o", str(out), "--cache_dir",
                           str(work / f"cache-{name}")]
                elif tool == "olivine_b32":
                    wf = work / "b32.json"
                    wf.write_text(json.dumps({
                        "input_model": {"type": "HfModel", "model_path": str(model)},
                        "passes": {"builder": {"type": "ModelBuilder", "precision": "int4"}},
                        "output_dir": str(out), "cache_dir": str(work / f"cache-{name}"),
                        "log_severity_level": 3}))
                    cmd = [sys.executable, "-m", "olivine", "run", "--config", str(wf)]
                else:
                    cmd = [*builder, "-i", str(model), "-o", str(out), "-c", str(work / "hf-cache"),
                           *(auto_opt_extra if tool == "builder_rtn_last" else [])]
                runs[tool].append(timed(cmd, env))
        for tool, samples in runs.items():
            if samples:
                results[f"{tool}_{name}"] = {
                    "wall_s_median": round(statistics.median(w for w, _ in samples), 2),
                    "wall_s_all": [round(w, 2) for w, _ in samples],
                    "peak_rss_gib": round(max(p for _, p in samples), 2)}
    results["decode_tok_s"] = {
        "olivine_default": round(decode_speed(work / "olivine-0.5b", args.threads), 1),  # last rep
        # Olive's options; the builder's accuracy level on the CPU is 4 either way
        "olivine_b32": round(decode_speed(work / "olivine_b32-0.5b", args.threads), 1)}
    if not args.skip_direct:
        results["decode_tok_s"]["builder_default"] = round(
            decode_speed(work / "builder-0.5b", args.threads), 1)
    print(json.dumps(results, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
