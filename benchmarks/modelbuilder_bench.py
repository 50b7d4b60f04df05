"""auto-opt int4 on a Qwen2.5-0.5B-shaped model: olivine against the builder called directly.

The model has Qwen2.5-0.5B's exact architecture (hidden 896, intermediate 4864, 24
layers, 14 heads, 2 kv heads, vocab 151936, tied embeddings) with random bf16
weights, built here (no download), plus a tokenizer trained on the Sonnets. For each
way of converting, a fresh process is timed and its peak RSS (the largest process of
its tree, from getrusage) recorded:

- ``olivine``: ``olivine auto-opt --precision int4`` (its CPU defaults: block 128, rtn_last);
- ``olivine_b32``: olivine's ModelBuilder pass at Olive's defaults (block 32, all 4-bit);
- ``builder``: the builder called directly at its defaults (what Olive's auto-opt runs);
- ``builder_rtn_last``: the builder called directly with auto-opt's options;
- ``olive`` (with ``--olive PATH``): Olive 0.13's own ``olive auto-opt --use_model_builder
  --precision int4`` (its own onnxruntime-genai and transformers, from a scratch venv).

Then onnxruntime-genai's decode speed of the int4 outputs is measured (greedy, 128 new
tokens, median of runs). A 2-layer model of the same width shows olivine's own overhead
on top of the builder.

    python benchmarks/modelbuilder_bench.py [--work DIR] [--threads 2] [--repeat 3] [--skip-direct]
        [--olive /tmp/olive-venv/bin/olive]

``--shape 7b`` (or ``3b``) instead: a Qwen2.5-7B-shaped model (7.6B parameters, untied; 3B:
3.1B, tied) with random bf16 weights written one shard (one decoder layer) at a time, so
generating it needs about one layer of memory (15 GB of disk for 7B); then one run of
``olivine auto-opt --precision int4`` on it (time, peak RSS), one of the builder called
directly with the same options, stopped when its RSS passes ``--cap`` GiB (the machine has
24 GB), a few greedy tokens of the output in onnxruntime-genai (in a fresh process, its peak
RSS too), and the generated files deleted. With ``--gptq N``, also ``olivine quantize
--algorithm gptq`` on it with N calibration windows of ``--gptq-seq-len`` tokens (time, peak RSS).
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


#: Qwen2.5-7B and -3B (their config.json; random weights are generated here).
LARGE_SHAPES = {
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
           "tie_word_embeddings": False, "max_position_embeddings": 32768,
           "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
    "3b": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
           "tie_word_embeddings": True, "max_position_embeddings": 32768,
           "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
}


def build_sharded_model(folder: Path, shape: dict[str, Any]) -> int:
    """Write a random bf16 Qwen2 of ``shape`` one shard at a time; return its parameter count.

    Shard 0 holds the embedding table, shards 1..L one decoder layer each, the last the final
    norm and (untied) the LM head; ``model.safetensors.index.json`` maps names to shards.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    from olivine_modelbuilder.tinymodel import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    config = Qwen2Config(**shape, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    config.architectures = ["Qwen2ForCausalLM"]
    config.torch_dtype = "bfloat16"
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    head = hidden // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head
    generator = torch.Generator().manual_seed(0)

    def rand(*dims: int) -> Any:
        return torch.empty(dims, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)

    layers = shape["num_hidden_layers"]
    count = layers + 2

    def make_shard(n: int) -> dict[str, Any]:
        if n == 0:
            return {"model.embed_tokens.weight": rand(shape["vocab_size"], hidden)}
        if n == count - 1:
            last = {"model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
            if not shape["tie_word_embeddings"]:
                last["lm_head.weight"] = rand(shape["vocab_size"], hidden)
            return last
        pre = f"model.layers.{n - 1}."
        return {pre + "self_attn.q_proj.weight": rand(hidden, hidden),
                pre + "self_attn.q_proj.bias": rand(hidden),
                pre + "self_attn.k_proj.weight": rand(kv, hidden),
                pre + "self_attn.k_proj.bias": rand(kv),
                pre + "self_attn.v_proj.weight": rand(kv, hidden),
                pre + "self_attn.v_proj.bias": rand(kv),
                pre + "self_attn.o_proj.weight": rand(hidden, hidden),
                pre + "mlp.gate_proj.weight": rand(inter, hidden),
                pre + "mlp.up_proj.weight": rand(inter, hidden),
                pre + "mlp.down_proj.weight": rand(hidden, inter),
                pre + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
                pre + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16)}

    total, weight_map = 0, {}
    for n in range(count):  # made, written and dropped one shard at a time
        shard = make_shard(n)
        name = f"model-{n + 1:05d}-of-{count:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for key, value in shard.items():
            weight_map[key] = name
            total += value.numel()
        del shard
    nbytes = total * 2
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": nbytes}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    return total


def timed_capped(cmd: list[str], env: dict[str, str], cap_gib: float) -> dict[str, Any]:
    """Run ``cmd``; sample its process tree's largest RSS every 0.2 s and stop it above
    ``cap_gib``. Returns wall seconds, the peak seen, the exit code and whether it was stopped."""
    import signal

    def rss_gib(pid: int) -> float:
        best = 0.0
        stack = [pid]
        while stack:
            current = stack.pop()
            try:
                status = Path(f"/proc/{current}/status").read_text()
                children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) / 2**20)
            stack += [int(c) for c in children]
        return best

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                start_new_session=True)
        peak, stopped = 0.0, False
        while proc.poll() is None:
            peak = max(peak, rss_gib(proc.pid))
            if peak > cap_gib:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped = True
                break
            time.sleep(0.2)
        proc.wait()
        log.seek(0)
        err = log.read()
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib_sampled": round(peak, 2),
            "rc": proc.returncode, "stopped_above_cap": stopped,
            "stderr_tail": err[-600:] if proc.returncode and not stopped else ""}


def large_run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """The ``--shape 7b|3b`` run (see the module docstring); deletes what it generated."""
    work = args.work or Path(tempfile.mkdtemp(prefix="olivine-mb-large-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / f"qwen{args.shape}"
    results: dict[str, Any] = {"shape": args.shape}
    try:
        t0 = time.perf_counter()
        results["parameters"] = build_sharded_model(folder, LARGE_SHAPES[args.shape])
        results["model_build_s"] = round(time.perf_counter() - t0, 1)
        out = work / "olivine-out"
        cmd = [sys.executable, "-m", "olivine", "auto-opt", "-m", str(folder), "-o", str(out),
               "--precision", "int4", "--device", "cpu", "--provider", "CPUExecutionProvider",
               "--cache_dir", str(work / "cache"), "--log_level", "3", "--save_config"]
        wall, peak = timed(cmd, env)
        results["olivine_auto_opt"] = {"wall_s": round(wall, 1), "peak_rss_gib": round(peak, 2),
                                       "options": json.loads((out / "config.json").read_text())
                                       ["passes"]["builder"] if (out / "config.json").exists()
                                       else None}
        shutil.rmtree(work / "cache", ignore_errors=True)
        check = ("import json, resource, sys\n"
                 "from olivine_modelbuilder.generate import generate, load_model\n"
                 "model, tok, cfg = load_model(sys.argv[1], int(sys.argv[2]))\n"
                 "ids = [int(i) for i in tok.encode('Shall I compare thee')]\n"
                 "r = generate(model, tok, cfg, ids, len(ids) + 4)\n"
                 "print(json.dumps({'tokens': list(r.tokens), 'decode_tok_s': "
                 "r.decode_tokens_per_s, 'peak_rss_gib': resource.getrusage("
                 "resource.RUSAGE_SELF).ru_maxrss / 2**20}))\n")
        gen = subprocess.run([sys.executable, "-c", check, str(out), str(args.threads)], env=env,
                             capture_output=True, text=True)
        results["genai_check"] = json.loads(gen.stdout.strip().splitlines()[-1]) \
            if gen.returncode == 0 else {"rc": gen.returncode, "stderr": gen.stderr[-800:]}
        size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
        results["olivine_output_gb"] = round(size / 1e9, 2)
        shutil.rmtree(out, ignore_errors=True)
        if args.gptq:
            results["olivine_gptq"] = gptq_run(folder, work, env, args)
        if not args.skip_direct:
            opts = results["olivine_auto_opt"]["options"] or {}
            extra = [f"block_size={opts.get('int4_block_size', 128)}",
                     f"algo_config={opts.get('int4_algo', 'rtn_last')}"]
            direct = work / "builder-out"
            results["builder_direct"] = timed_capped(
                [sys.executable, "-m", "onnxruntime_genai.models.builder", "-p", "int4", "-e",
                 "cpu", "-i", str(folder), "-o", str(direct), "-c", str(work / "hf-cache"),
                 "--extra_options", *extra], env, args.cap)
            results["builder_direct"]["cap_gib"] = args.cap
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def gptq_run(folder: Path, work: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """``olivine quantize --algorithm gptq`` on the large model with ``args.gptq`` calibration
    windows of ``args.gptq_seq_len`` tokens (the Sonnets); time, sampled peak RSS (stopped above
    ``--cap``), the output's size and its per-layer log; the output is deleted."""
    from olivine_modelbuilder.tinymodel import corpus_text

    text = work / "calibration.txt"
    text.write_text(corpus_text())
    out = work / "gptq-out"
    cmd = [sys.executable, "-m", "olivine", "quantize", "-m", str(folder), "-o", str(out),
           "--algorithm", "gptq", "--precision", "int4", "--data_files", str(text),
           "--max_samples", str(args.gptq), "--max_seq_len", str(args.gptq_seq_len),
           "--cache_dir", str(work / "gptq-cache"), "--log_level", "1"]
    result = timed_capped(cmd, env, args.cap)
    result.update(cap_gib=args.cap, calibration=f"{args.gptq} x {args.gptq_seq_len} tokens")
    if out.is_dir():
        result["output_gb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9, 2)
        result["quantization_config"] = json.loads((out / "config.json").read_text()).get(
            "quantization_config") if (out / "config.json").is_file() else None
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "gptq-cache", ignore_errors=True)
    return result


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


def olive_tokenizer_fixup(model: Path) -> None:
    """transformers 5 saves ``tokenizer_class: TokenizersBackend``, which Olive's transformers
    4.57 cannot load; name the class 4.57 knows (in the benchmark's own model folder)."""
    tok = model / "tokenizer_config.json"
    settings = json.loads(tok.read_text()) if tok.is_file() else {}
    if settings.get("tokenizer_class") == "TokenizersBackend":
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok.write_text(json.dumps(settings, indent=1))


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of the largest process in ``cmd``'s tree."""
    code = ("import resource, subprocess, sys, time, json\n"
            "t0 = time.perf_counter()\n"
            "r = subprocess.run(sys.argv[1:])\n"
            "wall = time.perf_counter() - t0\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20\n"
            "print(json.dumps({'rc': r.returncode, 'wall': wall, 'peak': peak}))\n")
    if cwd is not None:
        cwd.mkdir(parents=True, exist_ok=True)  # Olive writes its .olive-cache there
    out = subprocess.run([sys.executable, "-c", code, *cmd], env=env, capture_output=True,
                         text=True, check=True, cwd=cwd)
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


def tool_env(threads: int) -> dict[str, str]:
    """The tools' environment: ``threads`` threads, and bytecode written (see minilm_workflow_bench)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(LARGE_SHAPES), default=None,
                        help="a large sharded model instead (see the module docstring)")
    parser.add_argument("--olive", default=None,
                        help="also time Olive's own `olive auto-opt --use_model_builder --precision "
                             "int4` from this olive executable (a scratch venv with olive-ai 0.13.0)")
    parser.add_argument("--cap", type=float, default=12.0,
                        help="--shape: stop the builder called directly above this RSS (GiB)")
    parser.add_argument("--gptq", type=int, default=0, metavar="N",
                        help="--shape: also run `olivine quantize --algorithm gptq` with N calibration "
                             "windows (e.g. 8)")
    parser.add_argument("--gptq-seq-len", type=int, default=128,
                        help="--gptq: tokens per calibration window (default 128)")
    args = parser.parse_args()
    if args.shape:
        env = tool_env(args.threads)
        print(json.dumps(large_run(args, env), indent=2))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="olivine-mb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = tool_env(args.threads)
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
    tools += ["olive"] if args.olive else []
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
                elif tool == "olive":
                    olive_tokenizer_fixup(model)
                    cmd = [args.olive, "auto-opt", "-m", str(model), "--use_model_builder",
                           "--precision", "int4", "--device", "cpu", "--provider",
                           "CPUExecutionProvider", "-o", str(out)]
                    env_run = {**env, "CI": "1"}
                    runs[tool].append(timed(cmd, env_run, cwd=work / f"cache-{name}"))
                    continue
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
