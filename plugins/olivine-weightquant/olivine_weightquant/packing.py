"""Pack :class:`~olivine_weightquant.core.QuantizedWeight` into the tensors kernels and loaders read.

Two layouts:

ONNX Runtime (``MatMulNBits``, ``GatherBlockQuantized``)
    weights ``uint8 [N, G, block_size * bits / 8]``, low bits first; scales ``[N * G]``;
    zero points ``uint8 [N * ceil(G * bits / 8)]`` packed per row (or float ``[N * G]``).
GPTQ checkpoints (AutoGPTQ / transformers ``quant_method: gptq``, format v1)
    ``qweight int32 [K * bits / 32, N]`` packed along K; ``qzeros int32 [G, N * bits / 32]``
    packed along N and stored minus one; ``scales float16 [G, N]``; ``g_idx int32 [K]``.
"""

from __future__ import annotations

import numpy as np
import torch

from olivine_weightquant.core import QuantizedWeight


def _pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack the last dim of a uint8 tensor ``bits`` at a time into bytes (low bits first)."""
    if bits == 8:
        return values.to(torch.uint8)
    per = 8 // bits
    last = values.shape[-1]
    pad = (-last) % per
    if pad:
        values = torch.nn.functional.pad(values, (0, pad))
    v = values.to(torch.uint8).reshape(*values.shape[:-1], -1, per)
    out = torch.zeros(v.shape[:-1], dtype=torch.uint8)
    for j in range(per):
        out |= v[..., j] << (bits * j)
    return out


def unpack_rows(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`_pack_rows`: ``count`` values per row."""
    if bits == 8:
        return packed[..., :count].to(torch.uint8)
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * j)) & mask for j in range(per)]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], -1)[..., :count]


def matmul_nbits_tensors(qw: QuantizedWeight, scale_dtype: np.dtype
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(B, scales, zero_points)`` for ``MatMulNBits``; zero points ``None`` when symmetric."""
    n, k = qw.shape
    g = qw.n_groups
    q = qw.q
    pad = g * qw.group_size - k
    if pad:
        q = torch.nn.functional.pad(q, (0, pad))
    blob = _pack_rows(q.reshape(n, g, qw.group_size), qw.bits)
    scales = qw.scales.float().numpy().astype(scale_dtype).reshape(-1)
    if qw.symmetric:
        return blob.numpy(), scales, None
    if qw.zeros.is_floating_point():
        return blob.numpy(), scales, qw.zeros.float().numpy().astype(scale_dtype).reshape(-1)
    return blob.numpy(), scales, _pack_rows(qw.zeros, qw.bits).numpy().reshape(-1)


def gather_tensors(qw: QuantizedWeight, scale_dtype: np.dtype
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(data, scales, zero_points)`` for ``GatherBlockQuantized`` (uint8 data, quantize_axis 1)."""
    n, _ = qw.shape
    data = _pack_rows(qw.q, qw.bits).numpy()
    scales = qw.scales.float().numpy().astype(scale_dtype).reshape(n, -1)
    if qw.symmetric:
        return data, scales, None
    return data, scales, _pack_rows(qw.zeros, qw.bits).numpy()


# -- GPTQ checkpoint format ----------------------------------------------------------------------


def _pack_int32(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack ``32 / bits`` consecutive values along ``dim`` into int32 words."""
    per = 32 // bits
    v = values.to(torch.int64).movedim(dim, -1)
    v = v.reshape(*v.shape[:-1], -1, per)
    word = torch.zeros(v.shape[:-1], dtype=torch.int64)
    for j in range(per):
        word |= v[..., j] << (bits * j)
    word = torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)
    return word.movedim(-1, dim)


def _unpack_int32(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    per = 32 // bits
    mask = (1 << bits) - 1
    w = words.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    parts = [(w >> (bits * j)) & mask for j in range(per)]
    out = torch.stack(parts, dim=-1).reshape(*w.shape[:-1], -1)
    return out.movedim(-1, dim)


def gptq_tensors(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """``qweight``, ``qzeros``, ``scales`` and ``g_idx`` of one linear in GPTQ format (v1)."""
    n, k = qw.shape
    per = 32 // qw.bits
    if k % per or n % per:
        raise ValueError(f"a {n}x{k} weight cannot be packed {per} per int32 word at {qw.bits} bits")
    zeros = (qw.zeros.to(torch.int64) - 1) & ((1 << qw.bits) - 1)
    return {
        "qweight": _pack_int32(qw.q.t(), qw.bits, dim=0).contiguous(),
        "qzeros": _pack_int32(zeros.t(), qw.bits, dim=1).contiguous(),
        "scales": qw.scales.t().to(torch.float16).contiguous(),
        "g_idx": (torch.arange(k, dtype=torch.int32) // qw.group_size).contiguous(),
    }


def from_gptq_tensors(tensors: dict[str, torch.Tensor], bits: int, group_size: int,
                      symmetric: bool) -> QuantizedWeight:
    """Read one linear back from GPTQ format (v1; ``g_idx`` must be the plain block order)."""
    qweight, qzeros, scales = tensors["qweight"], tensors["qzeros"], tensors["scales"]
    q = _unpack_int32(qweight, bits, dim=0).t()
    k = q.shape[1]
    g_idx = tensors.get("g_idx")
    if g_idx is not None and not torch.equal(g_idx.to(torch.int64),
                                             torch.arange(k, dtype=torch.int64) // group_size):
        raise ValueError("act-order checkpoints (a permuted g_idx) are not supported")
    zeros = (_unpack_int32(qzeros, bits, dim=1) + 1) & ((1 << bits) - 1)
    return QuantizedWeight(q.to(torch.uint8).contiguous(), scales.t().float().contiguous(),
                           zeros.t().to(torch.uint8).contiguous(), bits, group_size, symmetric)
