"""The quantization math and the packed layouts, checked against ONNX Runtime and the genai loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from wq_onnx import make_onnx

from olivine.testing import record_quality, seed
from olivine_weightquant import core
from olivine_weightquant.onnx_nbits import Selection, quantize_onnx
from olivine_weightquant.packing import from_gptq_tensors, gptq_tensors


def _weights(n: int = 64, k: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w[: n // 4] += 0.8  # skewed rows, where a zero point helps
    w[:, 5] *= 6  # an outlier input channel
    return w


def test_symmetric_rtn_maps_the_signed_extreme_to_minus_eight() -> None:
    w = torch.tensor([[-4.0, -1.0, 0.0, 1.0, 2.0, 3.5] + [0.0] * 10])
    qw = core.rtn(w, 4, 16, symmetric=True)
    assert qw.zeros.tolist() == [[8]] and qw.scales.item() == pytest.approx(0.5)
    assert qw.q[0, :6].tolist() == [0, 6, 8, 10, 12, 15]  # 3.5/0.5 = 7 -> 15
    err = (qw.dequantize() - w).abs()
    assert float(err.max()) <= 0.25 + 1e-6  # half a step everywhere here


@pytest.mark.quality
@pytest.mark.parametrize("bits", [4, 8])
def test_asymmetric_blocks_are_never_worse_than_symmetric_ones(bits: int) -> None:
    """On skewed weights (a quarter of the rows shifted), a zero point lowers the squared error.

    Measured (benchmarks/quality_spread.py, 12 runs): asym/sym summed error 0.48 .. 0.66; no block
    ever worse (asymmetric takes the symmetric grid when that is better).
    """
    w = _weights(seed=seed())
    for size in (16, 32, 128):
        sym = (core.rtn(w, bits, size, True).dequantize() - w).pow(2)
        asym = (core.rtn(w, bits, size, False).dequantize() - w).pow(2)
        per_block_sym = core.grouped(sym, size).sum(-1)
        per_block_asym = core.grouped(asym, size).sum(-1)
        record_quality(f"core_asym_vs_sym_{bits}bit_block{size}", ratio=float(asym.sum() / sym.sum()),
                       worst_block_excess=float((per_block_asym - per_block_sym).max()))
        assert bool((per_block_asym <= per_block_sym + 1e-6).all())
        assert float(asym.sum()) < 0.95 * float(sym.sum())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_checkpoint_tensors_round_trip(bits: int, symmetric: bool) -> None:
    qw = core.rtn(_weights(), bits, 32, symmetric, scale_dtype=torch.float16)
    t = gptq_tensors(qw)
    assert t["qweight"].dtype == torch.int32 and t["qweight"].shape == (256 * bits // 32, 64)
    assert t["qzeros"].shape == (8, 64 * bits // 32) and t["scales"].shape == (8, 64)
    back = from_gptq_tensors(t, bits, 32, symmetric)
    assert torch.equal(back.q, qw.q) and torch.equal(back.zeros, qw.zeros)
    assert torch.equal(back.dequantize(), qw.dequantize())


def _correlated(tokens: int = 2048, k: int = 128, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    scale = torch.logspace(0, -1.5, k)
    return (torch.randn(tokens, k, generator=g) * scale) @ mix


@pytest.mark.quality
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_cuts_the_output_error_of_rtn(act_order: bool) -> None:
    x = _correlated(seed=1 + 10 * seed())
    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(2 + 10 * seed()))
    ref = x @ w.t()
    factor = core.factor_hessian(x.t() @ x, 0.01, act_order)
    for symmetric in (True, False):
        qg, _ = core.gptq(w, factor, 4, 32, symmetric)
        qr = core.rtn(w, 4, 32, symmetric)
        err_g = float((x @ qg.dequantize().t() - ref).pow(2).mean())
        err_r = float((x @ qr.dequantize().t() - ref).pow(2).mean())
        record_quality(f"core_gptq_vs_rtn_output_error_{'sym' if symmetric else 'asym'}"
                       f"{'_act_order' if act_order else ''}", ratio=err_g / err_r)
        assert err_g < 0.6 * err_r, (symmetric, err_g, err_r)  # measured 0.22 .. 0.27


@pytest.mark.quality
def test_hqq_lowers_the_weight_error_of_its_min_max_start() -> None:
    w = _weights(seed=seed())
    plain = core.hqq(w, 4, 64, iters=1)
    fitted = core.hqq(w, 4, 64, iters=20)
    assert fitted.zeros.is_floating_point()
    e_plain = float((plain.dequantize() - w).abs().mean())
    e_fit = float((fitted.dequantize() - w).abs().mean())
    record_quality("core_hqq_fit_vs_start", ratio=e_fit / e_plain)
    assert e_fit < e_plain  # measured: 0.966 .. 0.981 of the start's error


def _ort(path: Path, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids})[0]


def _reference(src: Path, emb_fn, w1_fn, w2_fn, ids: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    t = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    emb = emb_fn(torch.from_numpy(t["emb"])).numpy()
    w1 = w1_fn(torch.from_numpy(t["w1"]).t()).t().numpy()
    w2 = w2_fn(torch.from_numpy(t["w2"]).t()).t().numpy()
    return np.maximum(emb[ids] @ w1, 0) @ w2


CASES = [(4, True, 16), (4, False, 16), (4, True, 32), (4, False, 32), (4, False, 128), (8, True, 32),
         (8, False, 64)]


@pytest.mark.parametrize(("bits", "symmetric", "block"), CASES)
def test_matmul_nbits_and_gather_match_the_dequantized_reference(tmp_path: Path, bits: int,
                                                                 symmetric: bool, block: int) -> None:
    """K = 200 is not a multiple of any block size: padded last blocks, odd block counts."""
    src = make_onnx(tmp_path / "src")
    ids = np.array([0, 3, 17, 49], dtype=np.int64)

    def fn(w: torch.Tensor) -> core.QuantizedWeight:
        return core.rtn(w.float(), bits, block, symmetric)

    out = quantize_onnx(src, tmp_path / "out", fn, bits=bits, block_size=block, accuracy_level=None,
                        selection=Selection(("MatMul", "Gather")))
    got = _ort(out, ids)

    def deq(w: torch.Tensor) -> torch.Tensor:
        return fn(w).dequantize()

    want = _reference(src, deq, deq, deq, ids)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    fp = _reference(src, lambda w: w, lambda w: w, lambda w: w, ids)
    rel = float(np.abs(got - fp).max() / np.abs(fp).max())
    assert rel < (0.25 if bits == 4 else 0.02)


def test_hqq_float_zero_points_run_in_matmul_nbits(tmp_path: Path) -> None:
    src = make_onnx(tmp_path / "src")
    ids = np.array([1, 2, 40], dtype=np.int64)

    def fn(w: torch.Tensor) -> core.QuantizedWeight:
        return core.hqq(w.float(), 4, 32)

    out = quantize_onnx(src, tmp_path / "out", fn, bits=4, block_size=32, accuracy_level=None,
                        selection=Selection(("MatMul",)))
    want = _reference(src, lambda w: w, lambda w: fn(w).dequantize(), lambda w: fn(w).dequantize(), ids)
    np.testing.assert_allclose(_ort(out, ids), want, rtol=1e-4, atol=1e-4)


def test_checkpoint_tensors_repack_into_matmul_nbits_through_the_genai_loader(tmp_path: Path) -> None:
    """onnxruntime-genai's GPTQ loader turns our checkpoint into exactly our MatMulNBits tensors."""
    pytest.importorskip("onnxruntime_genai")
    from onnxruntime_genai.models.loaders.gptq import GPTQModel
    from safetensors.torch import save_file

    from olivine_weightquant.hf_checkpoint import make_quant_config
    from olivine_weightquant.packing import matmul_nbits_tensors

    hidden, inter = 64, 128
    g = torch.Generator().manual_seed(3)
    weights = {"q": (hidden, hidden), "k": (32, hidden), "v": (32, hidden), "o": (hidden, hidden),
               "gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)}
    tensors, expected = {}, {}
    for symmetric in (False,):
        for name, shape in weights.items():
            qw = core.rtn(torch.randn(*shape, generator=g), 4, 32, symmetric, torch.float16)
            part = "self_attn" if name in "qkvo" else "mlp"
            module = f"model.layers.0.{part}.{name}_proj"
            for key, value in gptq_tensors(qw).items():
                tensors[f"{module}.{key}"] = value
            expected[(part, f"{name}_proj")] = matmul_nbits_tensors(qw, np.dtype(np.float16))
    tensors["model.layers.0.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
    tensors["model.layers.0.post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
    tensors["model.embed_tokens.weight"] = torch.zeros(16, hidden, dtype=torch.float16)
    tensors["model.norm.weight"] = torch.ones(hidden, dtype=torch.float16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    qc = make_quant_config(4, 32, False, method="rtn")
    loaded = GPTQModel("gptq", str(tmp_path), {"config": qc, "use_g_idx": False}, hidden, 32, inter, 1)
    layer = loaded.layers[0]
    for (part, name), (blob, scales, zeros) in expected.items():
        module = getattr(getattr(layer, part), name)
        assert module.g_idx is None
        np.testing.assert_array_equal(module.qweight.numpy(), blob)
        np.testing.assert_array_equal(module.scales.numpy(), scales)
        np.testing.assert_array_equal(module.qzeros.numpy(), zeros)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_blocked_gram_matrix_equals_the_full_product(dtype: str) -> None:
    """Wide inputs sum X^T X over the upper block triangle only; the result is the full product."""
    import torch

    from olivine_weightquant.hf_quant import GRAM_BLOCK, add_gram_upper, mirror_upper

    k = 2 * GRAM_BLOCK + 41  # three blocks, the last one short
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(300, k, generator=gen).to(getattr(torch, dtype)) for _ in range(2)]
    h = torch.zeros(k, k)
    for x in batches:
        add_gram_upper(h, x)
    h = mirror_upper(h)
    want = sum((x.t() @ x).float() for x in batches)
    assert torch.equal(h, h.t())
    torch.testing.assert_close(h, want, rtol=1e-5, atol=1e-3)
