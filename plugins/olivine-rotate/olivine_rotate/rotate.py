"""QuaRot and SliceGPT on a loaded Hugging Face causal LM (in place), torch only.

Both first fold every RMSNorm's scale into the linears that read it (the norms keep
scale 1), which makes the residual stream rotation-invariant: with an orthogonal ``Q``,
embeddings ``E Q``, readers ``W Q`` and writers ``Q^T W`` compute the same function.

* QuaRot: ``Q`` is a random Hadamard (or Haar-random) matrix; each layer's value/output
  projections also get a per-head rotation. Nothing is added to the graph: the output is an
  ordinary checkpoint of the same architecture with unit norm scales and an untied LM head.
* SliceGPT: ``Q`` holds the principal directions of the residual stream on calibration
  text; keeping the first ``d'`` columns slices the hidden size to ``d'``. One ``Q`` for the
  whole stream (the paper rotates per layer and adds a ``d' x d'`` matrix to every skip
  connection, which standard architectures cannot hold), so the result is again an ordinary
  checkpoint, ``hidden_size = d'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from olivine import UsageError
from olivine_rotate import arch
from olivine_rotate.hadamard import hadamard_order_problem, orthogonal_matrix


def prepare(model: Any, pass_name: str) -> arch.Decoder:
    """Describe the model, untie its head and fold the norm scales into the readers."""
    decoder = arch.describe(model, pass_name)
    arch.untie(model)
    for norm, readers in decoder.norms():
        arch.fuse_norm(norm, readers)
    return decoder


def _apply(decoder: arch.Decoder, q: Any, progress: Callable[[int], None] | None = None) -> None:
    """Rotate (and, for a ``[d, d']`` ``q``, slice) the residual stream by ``q``; ``progress``
    is called with the number of layers done."""
    import torch

    embed = decoder.embed
    embed.weight = torch.nn.Parameter((embed.weight.data.double() @ q).to(embed.weight.dtype),
                                      requires_grad=False)
    embed.embedding_dim = q.shape[1]
    for i, layer in enumerate(decoder.layers):
        for linear in layer.attn_inputs + layer.mlp_inputs:
            arch.read_rotated(linear, q)
        arch.write_rotated(layer.attn_output, q)
        arch.write_rotated(layer.mlp_output, q)
        if progress:
            progress(i + 1)
    arch.read_rotated(decoder.lm_head, q)


def quarot(model: Any, rotate_mode: str, seed: int,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rotate ``model`` in place; returns facts about the rotation. ``progress(done, total)``
    counts layers."""
    import torch

    decoder = prepare(model, "QuaRot")
    if rotate_mode == "hadamard":
        for n, what in ((decoder.hidden_size, "hidden size"), (decoder.head_dim, "head size")):
            problem = hadamard_order_problem(n)
            if problem:
                raise UsageError(f"rotate_mode: the model's {what} is {n}: {problem}; use "
                                 "rotate_mode 'random'")
    gen = torch.Generator().manual_seed(seed)
    r1 = orthogonal_matrix(decoder.hidden_size, rotate_mode, gen)
    total = len(decoder.layers)
    _apply(decoder, r1, (lambda i: progress(i, total)) if progress else None)
    for layer in decoder.layers:
        r2 = orthogonal_matrix(decoder.head_dim, rotate_mode, gen)
        linear, start, rows = layer.value
        arch.rotate_heads_out(linear, start, rows, r2)
        arch.rotate_heads_in(layer.attn_output, r2)
    return {"method": "quarot", "rotate_mode": rotate_mode, "seed": seed,
            "hidden_size": decoder.hidden_size, "head_dim": decoder.head_dim}


def new_hidden_size(hidden: int, sparsity: float, round_interval: int) -> int:
    """Olive's rule: ``int((1 - sparsity) * d)`` rounded down to a multiple of ``round_interval``."""
    d = int((1 - sparsity) * hidden)
    d -= d % round_interval
    return d


def residual_covariance(decoder: arch.Decoder, batches: Iterable[dict[str, Any]],
                        progress: Callable[[int], None] | None = None) -> Any:
    """``sum x^T x`` over every token of every norm's input (the residual stream before each
    attention, MLP and the head), float64, padding excluded."""
    import torch

    d = decoder.hidden_size
    cov = torch.zeros(d, d, dtype=torch.float64)
    mask_now: list[Any] = [None]

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        x = args[0].detach().double().reshape(-1, d)
        mask = mask_now[0]
        if mask is not None:
            x = x[mask.reshape(-1).bool()]
        cov.add_(x.T @ x)

    handles = [norm.register_forward_pre_hook(hook) for norm, _ in decoder.norms()]
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                mask_now[0] = batch.get("attention_mask")
                decoder.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
                if progress:
                    progress(i + 1)
    finally:
        for handle in handles:
            handle.remove()
    return cov


def pca_basis(cov: Any) -> Any:
    """Eigenvectors of ``cov`` by decreasing eigenvalue (columns)."""
    import torch

    values, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(values, descending=True)
    return vectors[:, order]


def slice_model(model: Any, decoder: arch.Decoder, cov: Any, new_dim: int, final_orientation: str,
                seed: int) -> dict[str, Any]:
    """Rotate the stream to its principal directions and keep the first ``new_dim``."""
    import torch

    d = decoder.hidden_size
    q = pca_basis(cov)[:, :new_dim]
    if final_orientation == "random":
        gen = torch.Generator().manual_seed(seed)
        q = q @ orthogonal_matrix(new_dim, "random", gen)
    _apply(decoder, q)
    # RMSNorm over d' < d dims: x'/sqrt(|x'|^2/d' + eps') = sqrt(d'/d) x'/sqrt(|x'|^2/d + eps)
    # when eps' = eps d/d', so the scales become sqrt(d/d') and the config's eps grows by d/d'.
    scale = math.sqrt(d / new_dim)
    for norm, _ in decoder.norms():
        norm.weight = torch.nn.Parameter(torch.full((new_dim,), scale, dtype=norm.weight.dtype),
                                         requires_grad=False)
        if hasattr(norm, "variance_epsilon"):
            norm.variance_epsilon = norm.variance_epsilon * d / new_dim
        elif hasattr(norm, "eps"):
            norm.eps = norm.eps * d / new_dim
    config = model.config
    config.head_dim = decoder.head_dim
    config.hidden_size = new_dim
    if hasattr(config, "rms_norm_eps"):
        config.rms_norm_eps = float(config.rms_norm_eps) * d / new_dim
    return {"method": "slicegpt", "hidden_size": d, "new_hidden_size": new_dim}
