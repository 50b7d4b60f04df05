"""Options of the rotation passes (Olive's names and defaults), imported without torch."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine import option


def _positive(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name}: expected at least 1, got {value}")


def _sparsity(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1) of the hidden size to slice "
                         f"away, got {value}")


@attrs.frozen
class QuaRotConfig:
    """Options of ``QuaRot``."""

    seed: int = attrs.field(default=0, metadata=option(help="seed of the random rotations"))
    rotate_mode: Literal["hadamard", "random"] = attrs.field(default="hadamard", metadata=option(
        help="hadamard: random Hadamard matrices (random signs); random: Haar-random "
             "orthogonal matrices"))


@attrs.frozen
class SliceGPTConfig:
    """Options of ``SliceGPT``."""

    calibration_data_config: str = attrs.field(metadata=option(
        data_config=True, aliases=("data_config",),
        help="name of a workflow data_configs entry: the text whose activations the PCA "
             "rotations are computed from"))
    calibration_nsamples: int = attrs.field(default=128, validator=_positive, metadata=option(
        help="samples of the calibration data drawn at random (seeded)"))
    calibration_batch_size: int = attrs.field(default=16, validator=_positive, metadata=option(
        help="samples per forward pass while collecting activations"))
    seed: int = attrs.field(default=42, metadata=option(help="seed of the calibration sample draw"))
    sparsity: float = attrs.field(default=0.0, validator=_sparsity, metadata=option(
        help="fraction of the hidden size sliced away, in [0, 1)"))
    round_interval: int = attrs.field(default=8, validator=_positive, metadata=option(
        help="the new hidden size is rounded down to a multiple of this"))
    final_orientation: Literal["random", "pca"] = attrs.field(default="random", metadata=option(
        help="pca: keep the principal directions as the new basis; random: turn the kept "
             "subspace by a random rotation (seeded) afterwards"))
