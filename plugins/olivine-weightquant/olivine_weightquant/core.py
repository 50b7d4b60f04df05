"""Block-wise weight quantization math in torch: RTN, HQQ and GPTQ for one weight matrix.

Every function takes a weight in torch ``Linear`` layout, ``W[N, K]`` (``N`` outputs,
``K`` inputs), and quantizes along ``K`` in blocks of ``group_size`` columns. The
result is a :class:`QuantizedWeight`: unsigned integers ``q`` in ``[0, 2**bits - 1]``
with one scale and one zero point per (row, block), so that::

    W ~= (q - zero) * scale        (block-wise)

which is exactly what ONNX Runtime's ``MatMulNBits`` computes and what the GPTQ
checkpoint format stores. When ``K`` is not a multiple of ``group_size`` the last
block is shorter; the packers pad it.
"""

from __future__ import annotations

import attrs
import torch


@attrs.define
class QuantizedWeight:
    """A block-wise quantized ``W[N, K]``.

    ``q``: uint8 ``[N, K]``; ``scales``: float ``[N, G]``; ``zeros``: uint8 ``[N, G]``
    (integer zero points) or float ``[N, G]`` (HQQ's fractional zero points).
    ``symmetric`` means every zero point is ``2**(bits-1)``, so packers may omit them.
    """

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int
    symmetric: bool

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)``."""
        return int(self.q.shape[0]), int(self.q.shape[1])

    @property
    def n_groups(self) -> int:
        """Blocks per row."""
        return int(self.scales.shape[1])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(q - zero) * scale`` as a dense ``[N, K]`` tensor."""
        k = self.shape[1]
        scales = self.scales.float().repeat_interleave(self.group_size, dim=1)[:, :k]
        zeros = self.zeros.float().repeat_interleave(self.group_size, dim=1)[:, :k]
        return ((self.q.float() - zeros) * scales).to(dtype)


def n_groups(k: int, group_size: int) -> int:
    """Blocks needed for ``k`` columns."""
    return (k + group_size - 1) // group_size


def grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``W[N, K]`` as ``[N, G, group_size]``, the last block padded with zeros."""
    n, k = w.shape
    pad = n_groups(k, group_size) * group_size - k
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(n, -1, group_size)


def rtn_params(w: torch.Tensor, bits: int, symmetric: bool,
               scale_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of each block (reduced over the last dim of ``w``).

    Symmetric: the signed extreme of the block maps to ``-2**(bits-1)`` (the full
    range ``[-8, 7]`` for 4 bits, as ONNX Runtime does) and the zero point is
    ``2**(bits-1)``. Asymmetric: the range ``[min(w, 0), max(w, 0)]`` maps onto
    ``[0, 2**bits - 1]``. Scales are rounded to ``scale_dtype`` (as they will be
    stored) before the zero points are derived from them.
    """
    mid = 1 << (bits - 1)
    if symmetric:
        hi = w.amax(dim=-1)
        lo = w.amin(dim=-1)
        extreme = torch.where(hi.abs() > lo.abs(), hi, lo)
        scale = extreme / -mid
        scale = torch.where(scale == 0, torch.ones_like(scale), scale).to(scale_dtype).float()
        zero = torch.full_like(scale, float(mid))
        return scale, zero
    return _asymmetric_params(w, bits, scale_dtype)


#: Fractions of a block's range tried by the asymmetric search (1.0 is plain min/max).
SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)


def _asymmetric_params(w: torch.Tensor, bits: int, scale_dtype: torch.dtype
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (scale, zero) of each block with the smallest squared error among candidates.

    Candidates: the range ``[min(w, 0), max(w, 0)]`` shrunk by each of :data:`SHRINKS`,
    and the symmetric grid (step ``|extreme| / 2**(bits-1)``, zero point chosen so the
    extreme is exact). The symmetric grid is one of the candidates, so an asymmetric
    block is never worse than the symmetric one in squared error.
    """
    maxq = (1 << bits) - 1
    mid = 1 << (bits - 1)
    lo = w.amin(dim=-1).clamp(max=0)
    hi = w.amax(dim=-1).clamp(min=0)
    cands: list[tuple[torch.Tensor, torch.Tensor]] = []
    for f in SHRINKS:
        scale = ((hi - lo) * f / maxq)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale).to(scale_dtype).float()
        cands.append((scale, torch.round(-lo * f / scale).clamp(0, maxq)))
    extreme = torch.where(hi > -lo, hi, lo)
    scale = (extreme.abs() / mid)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale).to(scale_dtype).float()
    cands.append((scale, torch.where(extreme > 0, float(mid - 1), float(mid))))
    best_s, best_z = cands[0]
    best_err = None
    for scale, zero in cands:
        s, z = scale.unsqueeze(-1), zero.unsqueeze(-1)
        err = ((torch.clamp(torch.round(w / s) + z, 0, maxq) - z) * s - w).pow_(2).sum(dim=-1)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, scale, best_s)
        best_z = torch.where(better, zero, best_z)
    return best_s, best_z


def quantize_with(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """``clamp(round(w / scale) + zero)`` with ``scale``/``zero`` broadcast over the last dim."""
    maxq = (1 << bits) - 1
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def rtn(w: torch.Tensor, bits: int, group_size: int, symmetric: bool,
        scale_dtype: torch.dtype = torch.float32) -> QuantizedWeight:
    """Round-to-nearest block quantization of ``W[N, K]``."""
    n, k = w.shape
    g = grouped(w.float(), group_size)
    scale, zero = rtn_params(g, bits, symmetric, scale_dtype)
    q = quantize_with(g, scale.unsqueeze(-1), zero.unsqueeze(-1), bits)
    q = q.reshape(n, -1)[:, :k].to(torch.uint8)
    return QuantizedWeight(q, scale.to(scale_dtype), zero.to(torch.uint8), bits, group_size, symmetric)


def _shrink(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """The generalized soft-threshold (proximal operator of the l_p norm, p < 1)."""
    if p == 1:
        return torch.sign(x) * torch.relu(x.abs() - 1.0 / beta)
    return torch.sign(x) * torch.relu(x.abs() - (1.0 / beta) * torch.pow(x.abs() + 1e-8, p - 1))


def hqq(w: torch.Tensor, bits: int, group_size: int, *, iters: int = 20, lp_norm: float = 0.7,
        beta: float = 10.0, kappa: float = 1.01, integer_zeros: bool = False,
        update_scale: bool = True, scale_dtype: torch.dtype = torch.float32) -> QuantizedWeight:
    """Half-quadratic quantization (after Badri & Shaji, 2023): fit each block's grid, no data.

    Each iteration quantizes the block, splits its error into a sparse part (the proximal
    step of the ``l_p`` norm, ``p = lp_norm < 1``: outliers are let go) and the rest, then
    moves the zero point (HQQ's closed form) and, with ``update_scale``, the scale (least
    squares) to fit the rest. Unlike the paper, the start is olivine's RTN grid (clipping
    searched by squared error) rather than plain min/max, and each block keeps the
    iterate with the smallest squared error, so no block ends worse than RTN. Zero points
    are fractional unless ``integer_zeros`` (formats that store integer zero points).

    Measured on the tiny trained Qwen2 of the tests (4 bits, asymmetric): at block 32 the
    KL divergence to fp32 drops 13% below RTN's and perplexity is lower; at block 128
    it is not better than RTN (see the plugin README).
    """
    n, k = w.shape
    maxq = (1 << bits) - 1
    g = grouped(w.float(), group_size)
    scale, zero = _asymmetric_params(g, bits, scale_dtype)
    scale, zero = scale.unsqueeze(-1), zero.unsqueeze(-1)

    def sq_error(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(g / s + z), 0, maxq)
        return ((q - z) * s - g).pow(2).sum(dim=-1, keepdim=True)

    best_s, best_z, best_err = scale.clone(), zero.clone(), sq_error(scale, zero)
    for _ in range(iters):
        q = torch.clamp(torch.round(g / scale + zero), 0, maxq)
        target = g - _shrink(g - (q - zero) * scale, beta, lp_norm)  # what the grid should fit
        zero = torch.mean(q - target / scale, dim=-1, keepdim=True)
        if update_scale:
            centred = q - zero
            fitted = (centred * target).sum(-1, keepdim=True) / \
                centred.pow(2).sum(-1, keepdim=True).clamp(min=1e-12)
            scale = torch.where(fitted.abs() > 1e-12, fitted, best_s).to(scale_dtype).float()
        if integer_zeros:
            zero = torch.round(zero).clamp(0, maxq)
        beta *= kappa
        err = sq_error(scale, zero)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, scale, best_s)
        best_z = torch.where(better, zero, best_z)
    q = torch.clamp(torch.round(g / best_s + best_z), 0, maxq).reshape(n, -1)[:, :k].to(torch.uint8)
    zeros = best_z.squeeze(-1)
    zeros = zeros.to(torch.uint8) if integer_zeros else zeros.to(scale_dtype)
    return QuantizedWeight(q, best_s.squeeze(-1).to(scale_dtype), zeros, bits, group_size,
                           symmetric=False)


# -- GPTQ ---------------------------------------------------------------------------------------


@attrs.define
class HessianFactor:
    """What GPTQ needs from one Hessian: the upper Cholesky factor of its damped inverse.

    Linears that read the same input (q/k/v, gate/up) share one factor.
    ``perm`` is the act-order column order (``None`` without act-order); ``dead``
    marks input channels that were always zero in the calibration data.
    """

    hinv: torch.Tensor
    perm: torch.Tensor | None
    dead: torch.Tensor
    damping: float


def factor_hessian(h: torch.Tensor, damp_percent: float, act_order: bool) -> HessianFactor:
    """Damp ``h`` (``X^T X`` summed over calibration tokens) and factor its inverse.

    The damping is ``damp_percent`` times the mean diagonal; when the factorization
    fails (an ill-conditioned Hessian) it is raised tenfold, up to three times.

    The upper factor ``U`` of ``H^-1 = U^T U`` comes from one Cholesky factorization of
    the index-reversed matrix ``J H J = L L^T``: then ``U = J L^-1 J``. That is a third
    of the work of factoring, inverting and factoring again, and keeps at most two
    ``K x K`` matrices alive. ``h`` is consumed.
    """
    k = h.shape[0]
    diag = torch.diagonal(h)
    dead = diag == 0
    diag[dead] = 1.0
    perm = None
    if act_order:
        perm = torch.argsort(diag, descending=True, stable=True)
        h = h[perm][:, perm]
    flipped = h.flip(0, 1)
    del h, diag
    diag = torch.diagonal(flipped)
    base = float(diag.mean())
    damp, added = damp_percent, 0.0
    for _ in range(4):
        diag.add_(damp * base - added)
        added = damp * base
        lower, info = torch.linalg.cholesky_ex(flipped)
        if int(info) == 0:
            del flipped, diag
            inv = torch.eye(k)
            torch.linalg.solve_triangular(lower, inv, upper=False, out=inv)
            del lower
            return HessianFactor(inv.flip(0, 1), perm, dead, damp)
        del lower
        damp *= 10
    raise ValueError(f"the Hessian of a {k}-input layer is not positive definite even with "
                     f"damping {damp / 10:g}; the calibration data may be too small or degenerate")


def gptq(w: torch.Tensor, factor: HessianFactor, bits: int, group_size: int, symmetric: bool,
         *, block: int = 128, scale_dtype: torch.dtype = torch.float32) -> tuple[QuantizedWeight, float]:
    """GPTQ (Frantar et al., 2022) of ``W[N, K]``: quantize column by column, spreading each
    column's rounding error over the columns not yet quantized, weighted by the inverse
    Hessian; updates beyond the current block of ``block`` columns are applied lazily.

    With act-order (``factor.perm``), columns are visited by decreasing Hessian diagonal,
    but each column keeps the scale and zero point of its own block (computed up front:
    "static groups"), so the result needs no ``g_idx`` and runs on every MatMulNBits
    kernel. Returns the quantized weight and the loss ``sum(err^2 / d^2) / 2``.

    Internally the weight is held transposed (``[K, N]``), so that a column is a
    contiguous row and each rank-1 update touches contiguous memory.
    """
    n, k = w.shape
    w = w.float().clone()
    w[:, factor.dead] = 0
    maxq = (1 << bits) - 1
    groups = n_groups(k, group_size)
    scales = torch.empty(groups, n)
    zeros = torch.empty(groups, n)
    perm = factor.perm
    static = perm is not None
    group_of: list[int] = []
    if perm is not None:
        s, z = rtn_params(grouped(w, group_size), bits, symmetric, scale_dtype)
        scales.copy_(s.t())
        zeros.copy_(z.t())
        w = w[:, perm]
        group_of = torch.div(perm, group_size, rounding_mode="floor").tolist()
    wt = w.t().contiguous()
    del w
    q_all = torch.empty(k, n, dtype=torch.uint8)
    hinv = factor.hinv
    loss = 0.0
    threads = torch.get_num_threads()
    try:
        for i1 in range(0, k, block):
            i2 = min(i1 + block, k)
            count = i2 - i1
            # the column loop is thousands of small ops: one thread, no fork/join per op (which
            # costs milliseconds each when the cores are shared); the block update uses them all
            torch.set_num_threads(1)
            w1 = wt[i1:i2].clone()
            err1 = torch.empty(count, n)
            h1 = hinv[i1:i2, i1:i2]
            for i in range(count):
                col = i1 + i
                if static:
                    g = group_of[col]
                else:
                    g = col // group_size
                    if col % group_size == 0:
                        end = min(col + group_size, k)
                        span = w1[i:i + (end - col)] if end <= i2 else wt[col:end]
                        s, z = rtn_params(span.t(), bits, symmetric, scale_dtype)
                        scales[g] = s
                        zeros[g] = z
                s = scales[g]
                z = zeros[g]
                x = w1[i]
                q = torch.clamp(torch.round(x / s) + z, 0, maxq)
                q_all[col] = q.to(torch.uint8)
                err = (x - (q - z) * s) / h1[i, i]
                if i + 1 < count:
                    w1[i + 1:].addr_(h1[i, i + 1:], err, alpha=-1)
                err1[i] = err
            loss += float(err1.pow(2).sum()) / 2
            torch.set_num_threads(threads)
            if i2 < k:
                wt[i2:].addmm_(hinv[i1:i2, i2:].t(), err1, alpha=-1)
    finally:
        torch.set_num_threads(threads)
    q_all = q_all.t()
    if perm is not None:
        q_all = q_all[:, torch.argsort(perm)]
    qw = QuantizedWeight(q_all.contiguous(), scales.t().contiguous().to(scale_dtype),
                         zeros.t().contiguous().to(torch.uint8), bits, group_size, symmetric)
    return qw, loss


# -- k-quant (llama.cpp's weighted least squares; Olive's OnnxKQuantQuantization) -------------------

#: Candidate grids tried per block: the range divided into ``maxq - 1 + 0.1 * i`` steps.
KQUANT_STEPS = 20


def kquant(w: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Asymmetric k-quant of ``W[N, K]`` (always with zero points), as Olive's pass computes it.

    Each block's values are weighted by ``rms(block) + |w|``. Starting from the min/max
    grid, the block tries :data:`KQUANT_STEPS` denser grids (each anchored at the offset
    accepted so far); for each, the integer codes are fixed and scale and offset solved by
    weighted least squares, and the fit with the smallest weighted squared error is kept.
    The offset then becomes an integer zero point and the codes are rounded once more against it.
    """
    n, k = w.shape
    x = grouped(w.float(), group_size)  # [N, G, B]
    maxq = (1 << bits) - 1
    weights = torch.sqrt((x * x).sum(-1, keepdim=True) / group_size) + x.abs()
    rmin = x.amin(-1, keepdim=True)
    rmax = x.amax(-1, keepdim=True)
    span = rmax - rmin
    flat = span == 0
    safe_span = torch.where(flat, torch.ones_like(span), span)
    sum_w = weights.sum(-1, keepdim=True)
    sum_x = (weights * x).sum(-1, keepdim=True)
    iscale = torch.where(flat, torch.ones_like(span), maxq / safe_span)
    scale = 1 / iscale
    q = torch.clamp(torch.round(iscale * (x - rmin)), 0, maxq)
    best = (weights * (scale * q + rmin - x) ** 2).sum(-1, keepdim=True)
    for step in range(KQUANT_STEPS):
        factor = torch.tensor(-1 + 0.1 * step + maxq, dtype=torch.float32)
        span = rmax - rmin  # the offset of an accepted fit moves the next grids (as llama.cpp's)
        flat = span == 0
        safe_span = torch.where(flat, torch.ones_like(span), span)
        trial_iscale = torch.where(flat, torch.ones_like(span), factor / safe_span)
        qn = torch.clamp(torch.round(trial_iscale * (x - rmin)), 0, maxq)
        wq = weights * qn
        sum_l = wq.sum(-1, keepdim=True)
        sum_l2 = (wq * qn).sum(-1, keepdim=True)
        sum_xl = (wq * x).sum(-1, keepdim=True)
        det = sum_w * sum_l2 - sum_l * sum_l
        trial_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        err = (weights * (trial_scale * qn + trial_min - x) ** 2).sum(-1, keepdim=True)
        better = err < best  # NaN (a singular fit) is never better
        best = torch.where(better, err, best)
        scale = torch.where(better, trial_scale, scale)
        rmin = torch.where(better, trial_min, rmin)
    zero = torch.clamp(torch.round(-rmin / scale), 0, maxq)
    codes = torch.clamp(torch.round(x.double() / scale.double() + zero.double()), 0, maxq)
    codes = codes.reshape(n, -1)[:, :k].to(torch.uint8)
    return QuantizedWeight(codes, scale.squeeze(-1), zero.squeeze(-1).to(torch.uint8), bits,
                           group_size, False)
