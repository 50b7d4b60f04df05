"""Orthogonal matrices for QuaRot: random Hadamard (``hadamard``) and Haar-random (``random``).

A Hadamard matrix of order ``n`` is built as ``H_m (x) H_2^k`` (Kronecker) with ``n = m * 2^k``
and ``H_m`` from Sylvester (``m`` = 1, 2) or Paley's constructions: type I for ``m - 1`` a
prime of the form 4t+3, type II for ``m/2 - 1`` a prime of the form 4t+1. That covers the
widths of the common LLMs (2048, 3072 = 12 * 256, 896 = 28 * 32, 1536, 3584, 5120 = 20 * 256,
head sizes 64, 80, 96, 128, ...). The random sign flips make it a *random* Hadamard rotation.
"""

from __future__ import annotations

from typing import Any


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    return all(p % d for d in range(2, int(p ** 0.5) + 1))


def _jacobsthal(q: int) -> Any:
    """``Q[i, j]`` = the Legendre symbol of ``j - i`` modulo the prime ``q`` (a torch tensor)."""
    import torch

    chi = -torch.ones(q, dtype=torch.float64)
    chi[0] = 0
    chi[(torch.arange(1, q) ** 2) % q] = 1
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def _bordered(q: int, corner: float, left: float) -> Any:
    """``[[corner, 1^T], [left 1, Q]]`` around the Jacobsthal matrix of ``q``."""
    import torch

    out = torch.empty(q + 1, q + 1, dtype=torch.float64)
    out[0, 0] = corner
    out[0, 1:] = 1
    out[1:, 0] = left
    out[1:, 1:] = _jacobsthal(q)
    return out


def _paley1(q: int) -> Any:
    """Order ``q + 1`` for a prime ``q = 3 (mod 4)``: ``I + S``, ``S`` skew-symmetric."""
    import torch

    return _bordered(q, 0.0, -1.0) + torch.eye(q + 1, dtype=torch.float64)


def _paley2(q: int) -> Any:
    """Order ``2 (q + 1)`` for a prime ``q = 1 (mod 4)``: each entry of the symmetric bordered
    matrix becomes a 2 x 2 block (0 -> [[1, -1], [-1, -1]], +-1 -> +-[[1, 1], [1, -1]])."""
    import torch

    c = _bordered(q, 0.0, 1.0)
    zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, one) + torch.kron((c == 0).to(torch.float64), zero)


def _construction(m: int) -> str | None:
    """Which construction gives order ``m`` (``sylvester``, ``paley1``, ``paley2``), or ``None``."""
    if m in (1, 2):
        return "sylvester"
    if m % 4:
        return None
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return "paley1"
    if _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return "paley2"
    return None


def _base(m: int) -> Any:
    """The Hadamard matrix of order ``m`` that :func:`_construction` names (float64 tensor)."""
    import torch

    kind = _construction(m)
    if kind == "paley1":
        return _paley1(m - 1)
    if kind == "paley2":
        return _paley2(m // 2 - 1)
    return torch.tensor([[1.0]] if m == 1 else [[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)


def _odd_part_order(n: int) -> int | None:
    """The smallest ``m`` with ``n = m * 2^k`` that a construction gives, or ``None``."""
    if n < 1:
        return None
    m = n
    while m % 2 == 0:
        m //= 2
    while n % m == 0:
        if _construction(m):
            return m
        m *= 2
    return None


def hadamard_order_problem(n: int) -> str | None:
    """Why no Hadamard matrix of order ``n`` can be built here (``None`` when one can)."""
    if n >= 1 and _odd_part_order(n) is not None:
        return None
    return (f"no Hadamard matrix of order {n} is known to olivine (orders m * 2^k with m = 1, 2, "
            "p + 1 for a prime p = 3 mod 4, or 2 (p + 1) for a prime p = 1 mod 4)")


def hadamard(n: int) -> Any:
    """The (unnormalized, +-1) Hadamard matrix of order ``n`` as a float64 torch tensor."""
    import torch

    problem = hadamard_order_problem(n)
    if problem:
        raise ValueError(problem)
    m = _odd_part_order(n)
    assert m is not None
    h = _base(m)
    two = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.kron(h, two)
    return h


def orthogonal_matrix(n: int, mode: str, generator: Any) -> Any:
    """A float64 ``n x n`` orthogonal matrix: ``D H / sqrt(n)`` with random signs ``D``
    (``hadamard``), or Q of the QR of a Gaussian matrix with R's diagonal made positive (``random``)."""
    import torch

    if mode == "hadamard":
        signs = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2 - 1
        return signs[:, None] * hadamard(n) / n ** 0.5
    if mode == "random":
        q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))[None, :]
    raise ValueError(f"rotate_mode: expected 'hadamard' or 'random', got {mode!r}")
