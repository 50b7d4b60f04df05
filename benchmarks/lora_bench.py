"""LoRA training throughput on CPU: olivine's LoRA pass vs plain peft + Trainer by hand.

Two models with random weights, built here (no downloads): ``tiny`` (Qwen2, hidden 128,
4 layers) and ``qwen0.5b`` (the shape of Qwen2.5-0.5B: hidden 896, intermediate 4864, 24
layers, 14 heads, 2 KV heads, vocab 151936, tied embeddings). The data is the Sonnets
joined and cut into blocks of ``--seq`` tokens, so every step trains on exactly
``batch x seq`` tokens in both runners. Both train LoRA r=16 on every attention and MLP
projection with the same TrainingArguments (one checkpoint, at the end). Olivine runs
its workflow in this process (``isolation: never``) on a fresh cache each round.

Reported per model, median over ``--rounds`` interleaved rounds:
  train tokens/s      tokens / Trainer's train_runtime (the training loop, wall clock)
  train tokens/CPU s  tokens / this process's CPU seconds in trainer.train() (steadier
                      than wall clock on a machine shared with other work)
  end to end s        olivine: olivine.run() of the workflow (validation, input hashing,
                      data, model load, training, saving, publishing); plain: the same
                      work written by hand
and olivine's overhead on each (target: at most 5% on the training throughput).

Run alone (it is heavy): OMP_NUM_THREADS=1 python benchmarks/lora_bench.py [--models tiny]
Needs: olivine-lora, olivine-modelbuilder (its Sonnets tokenizer), peft.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
             "tie_word_embeddings": True},
    "qwen0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                 "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                 "tie_word_embeddings": True},
}
#: steps and batch per model (enough steps for a stable rate, few enough to run in minutes)
PLAN = {"tiny": {"steps": 60, "batch": 4}, "qwen0.5b": {"steps": 6, "batch": 1}}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(name: str, root: Path) -> Path:
    """A random-weight Qwen2 of the named shape, with the Sonnets BPE tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from olivine_modelbuilder.tinymodel import train_tokenizer

    folder = root / name
    if (folder / "config.json").is_file():
        return folder
    tokenizer = train_tokenizer(1024)
    shape = SHAPES[name]
    config = AutoConfig.for_model(
        "qwen2", **shape, head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        max_position_embeddings=4096, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(root: Path) -> Path:
    """The Sonnets, one poem per row, as jsonl."""
    from olivine_modelbuilder.tinymodel import sonnets

    path = root / "sonnets.jsonl"
    path.write_text("".join(json.dumps({"text": "\n".join(p)}) + "\n" for p in sonnets()))
    return path


def settings(seq: int, steps: int, batch: int) -> dict[str, Any]:
    """The training settings both runners use."""
    return {"lora_r": 16, "lora_alpha": 32, "max_steps": steps, "learning_rate": 2e-4,
            "per_device_train_batch_size": batch, "logging_steps": steps, "save_steps": steps,
            "seed": 0, "max_seq_len": seq, "target_modules": TARGETS}


def run_olivine(model: Path, data: Path, cache: Path, out: Path, cfg: dict[str, Any]
                ) -> dict[str, float]:
    """One olivine.run() of a LoRA workflow in this process."""
    import olivine

    shutil.rmtree(cache / "steps", ignore_errors=True)  # keep file-hashes.sqlite, drop results
    shutil.rmtree(out, ignore_errors=True)
    # the plain peft/transformers run's settings where olivine's (Olive's) defaults differ
    step = {"type": "LoRA", "train_data_config": "data", **cfg, "torch_dtype": "float32",
            "lora_dropout": 0.0, "gradient_checkpointing": False, "lr_scheduler_type": "linear",
            "warmup_ratio": 0.0}
    seq = step.pop("max_seq_len")
    wf = {"input_model": {"type": "HfModel", "model_path": str(model)},
          "systems": {"local": {"type": "LocalSystem", "isolation": "never"}},
          "data_configs": [{"name": "data", "load_dataset_config": {"data_files": [str(data)]},
                            "pre_process_data_config": {"strategy": "join", "max_seq_len": seq,
                                                        "text_field": "text"}}],
          "passes": {"lora": step}, "output_dir": str(out), "cache_dir": str(cache),
          "log_severity_level": 4}
    t0 = time.perf_counter()
    result = olivine.run(wf)
    total = time.perf_counter() - t0
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    return {"runtime": record["train_runtime"], "cpu": record["train_cpu_seconds"], "total": total,
            "steps": record["steps"]}


def run_plain(model: Path, data: Path, out: Path, cfg: dict[str, Any]) -> dict[str, float]:
    """The same training written by hand with peft and the transformers Trainer."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines() if line.strip()]
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream.extend([*ids, tokenizer.eos_token_id])
    seq = cfg["max_seq_len"]
    blocks = [stream[i:i + seq] for i in range(0, len(stream), seq)]
    if len(blocks) > 1 and len(blocks[-1]) < seq // 2:
        blocks.pop()
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    net.config.use_cache = False
    transformers.set_seed(cfg["seed"])
    net = get_peft_model(net, LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"],
                                         target_modules=cfg["target_modules"], task_type="CAUSAL_LM"))

    def collate(rows: list[list[int]]) -> dict[str, Any]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=cfg["max_steps"],
        learning_rate=cfg["learning_rate"], per_device_train_batch_size=cfg[
            "per_device_train_batch_size"], logging_steps=cfg["logging_steps"],
        save_steps=cfg["save_steps"], save_total_limit=2, seed=cfg["seed"], report_to=[],
        disable_tqdm=True, use_cpu=True, remove_unused_columns=False)
    trainer = Trainer(model=net, args=args, train_dataset=blocks, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # its log lines would mix into --json output
    cpu = time.process_time()
    output = trainer.train()
    cpu = time.process_time() - cpu
    net.save_pretrained(str(out / "adapter"))
    total = time.perf_counter() - t0
    return {"runtime": float(output.metrics["train_runtime"]), "cpu": cpu, "total": total,
            "steps": trainer.state.global_step}


def bench(name: str, root: Path, rounds: int, seq: int) -> dict[str, Any]:
    """Interleaved rounds of both runners on one model; medians and overheads."""
    model = build_model(name, root / "models")
    data = write_data(root)
    plan = PLAN[name]
    cfg = settings(seq, plan["steps"], plan["batch"])
    tokens = plan["steps"] * plan["batch"] * seq
    rows: dict[str, list[dict[str, float]]] = {"olivine": [], "plain": []}
    for i in range(rounds):
        order = ("olivine", "plain") if i % 2 == 0 else ("plain", "olivine")
        for runner in order:
            if runner == "olivine":
                got = run_olivine(model, data, root / "cache", root / "out-olivine", cfg)
            else:
                got = run_plain(model, data, root / "out-plain", cfg)
            assert got["steps"] == plan["steps"], got
            rows[runner].append(got)
            print(f"  {name} round {i + 1} {runner:8s}: {tokens / got['runtime']:8.1f} train "
                  f"tokens/s ({tokens / got['cpu']:8.1f} per CPU s), {got['total']:.2f} s end to "
                  "end", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"model": name, "tokens_per_run": tokens, "rounds": rounds, **plan,
                           "seq": seq}
    for runner, got in rows.items():
        out[runner] = {
            "train_tokens_per_s": round(tokens / statistics.median(g["runtime"] for g in got), 1),
            "train_tokens_per_cpu_s": round(tokens / statistics.median(g["cpu"] for g in got), 1),
            "end_to_end_s": round(statistics.median(g["total"] for g in got), 2),
            "runs": got}
    for key in ("train_tokens_per_s", "train_tokens_per_cpu_s"):
        out[f"{key}_overhead_pct"] = round(100 * (out["plain"][key] / out["olivine"][key] - 1), 2)
    out["end_to_end_overhead_pct"] = round(100 * (out["olivine"]["end_to_end_s"] /
                                                  out["plain"]["end_to_end_s"] - 1), 2)
    return out


def main() -> int:
    """Parse flags, run, print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,qwen0.5b", help="comma-separated: tiny, qwen0.5b")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--workdir", default=None, help="keep models and caches here")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lora-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    results = [bench(m.strip(), root, args.rounds, args.seq) for m in args.models.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"LoRA r=16 on 7 projections, seq {args.seq}, {args.threads} thread(s), CPU, "
          f"median of {args.rounds} rounds; overhead = olivine's extra time")
    print(f"{'model':9s} {'steps x batch':>13s} | {'train tokens/s (wall)':^30s} | "
          f"{'train tokens/CPU s':^30s} | {'end to end s':^24s}")
    print(f"{'':9s} {'':13s} | {'olivine':>9s} {'plain':>9s} {'overhead':>9s} | "
          f"{'olivine':>9s} {'plain':>9s} {'overhead':>9s} | {'olivine':>7s} {'plain':>7s} "
          f"{'overhead':>8s}")
    for r in results:
        o, p = r["olivine"], r["plain"]
        print(f"{r['model']:9s} {r['steps']:>5d} x {r['batch']:<5d} | "
              f"{o['train_tokens_per_s']:>9.1f} {p['train_tokens_per_s']:>9.1f} "
              f"{r['train_tokens_per_s_overhead_pct']:>8.1f}% | "
              f"{o['train_tokens_per_cpu_s']:>9.1f} {p['train_tokens_per_cpu_s']:>9.1f} "
              f"{r['train_tokens_per_cpu_s_overhead_pct']:>8.1f}% | {o['end_to_end_s']:>7.2f} "
              f"{p['end_to_end_s']:>7.2f} {r['end_to_end_overhead_pct']:>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
