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


def _jacobsthal(q: int) -> list[list[int]]:
    """``Q[i][j]`` = the Legendre symbol of ``j - i`` modulo the prime ``q``."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = [0] + [1 if a in squares else -1 for a in range(1, q)]
    return [[chi[(j - i) % q] for j in range(q)] for i in range(q)]


def _paley1(q: int) -> list[list[int]]:
    """Order ``q + 1`` for a prime ``q = 3 (mod 4)``: ``I + S``, ``S`` skew-symmetric."""
    jac = _jacobsthal(q)
    n = q + 1
    s = [[0] * n for _ in range(n)]
    for j in range(1, n):
        s[0][j] = 1
        s[j][0] = -1
    for i in range(q):
        for j in range(q):
            s[i + 1][j + 1] = jac[i][j]
    return [[s[i][j] + (1 if i == j else 0) for j in range(n)] for i in range(n)]


def _paley2(q: int) -> list[list[int]]:
    """Order ``2 (q + 1)`` for a prime ``q = 1 (mod 4)``."""
    jac = _jacobsthal(q)
    n = q + 1
    c = [[0] * n for _ in range(n)]
    for j in range(1, n):
        c[0][j] = c[j][0] = 1
    for i in range(q):
        for j in range(q):
            c[i + 1][j + 1] = jac[i][j]
    zero = ((1, -1), (-1, -1))
    one = ((1, 1), (1, -1))
    out = [[0] * (2 * n) for _ in range(2 * n)]
    for i in range(n):
        for j in range(n):
            v = c[i][j]
            block = zero if v == 0 else one
            sign = -1 if v < 0 else 1
            for a in range(2):
                for b in range(2):
                    out[2 * i + a][2 * j + b] = sign * block[a][b]
    return out


def _base(m: int) -> list[list[int]] | None:
    """A Hadamard matrix of order ``m`` from Sylvester or Paley, or ``None``."""
    if m == 1:
        return [[1]]
    if m == 2:
        return [[1, 1], [1, -1]]
    if m % 4:
        return None
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return _paley1(m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return _paley2(m // 2 - 1)
    return None


def hadamard_order_problem(n: int) -> str | None:
    """Why no Hadamard matrix of order ``n`` can be built here (``None`` when one can)."""
    m = n
    while m % 2 == 0 and _base(m) is None:
        m //= 2
    if n >= 1 and _base(m) is not None:
        return None
    return (f"no Hadamard matrix of order {n} is known to olivine (orders m * 2^k with m = 1, 2, "
            "p + 1 for a prime p = 3 mod 4, or 2 (p + 1) for a prime p = 1 mod 4)")


def hadamard(n: int) -> Any:
    """The (unnormalized, +-1) Hadamard matrix of order ``n`` as a float64 torch tensor."""
    import torch

    problem = hadamard_order_problem(n)
    if problem:
        raise ValueError(problem)
    m = n
    while m % 2 == 0 and _base(m) is None:
        m //= 2
    base = _base(m)
    assert base is not None
    h = torch.tensor(base, dtype=torch.float64)
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
