"""Options of the passes Olive's LLM recipes add around RTN and GPTQ (Olive's names and defaults):
``SelectiveMixedPrecision``, ``OnnxKQuantQuantization`` and ``MatMulNBitsToQDQ``.

Imported by ``olivine passes`` and config validation: nothing heavy here.
"""

from __future__ import annotations

from typing import Any

import attrs

from olivine import option
from olivine.onnxsave import ExternalDataOptions
from olivine_weightquant.config import CalibrationFields, _accuracy, _bits, _block, _positive, _seq

#: Olive's SelectiveMixedPrecision algorithms: layer-position heuristics, then score-based ones.
K_QUANT = ("k_quant_down", "k_quant_mixed", "k_quant_last")
SCORED = ("snr", "snr_relative", "iqe", "iqe_relative", "kld_gradient")
KLD_MEMORY_MODES = ("auto", "full", "multi_gpu", "low_memory", "offload")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and value not in choices:
            raise ValueError(f"{attribute.name}: expected one of {', '.join(choices)}, got {value!r}")
    return check


def _optional_block(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None:
        _block(instance, attribute, value)


@attrs.frozen
class SelectiveMixedPrecisionConfig(CalibrationFields):
    """Options of ``SelectiveMixedPrecision``: which modules get ``high_bits``.

    The calibration options (``data_config``, ``data_files``, ...) are read by
    ``kld_gradient`` only; without them it calibrates on Olive's default (wikitext-2 from
    the hub, 256 windows of 512 tokens).
    """

    algorithm: str | None = attrs.field(default=None, validator=_one_of(K_QUANT + SCORED), metadata=option(
        help="k_quant_last (LM head), k_quant_down (+ down_proj of the first and last eighth of "
             "the layers and every third between), k_quant_mixed (+ their q/k/v too); scored: "
             "snr, snr_relative, iqe, iqe_relative, kld_gradient (need ratio)",
        search=K_QUANT))
    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="the default weight bits"))
    group_size: int = attrs.field(default=128, validator=_block, metadata=option(
        help="the default block size (scored algorithms; also what the next passes use)"))
    sym: bool = attrs.field(default=False, metadata=option("symmetric blocks by default (scored algorithms)"))
    high_bits: int = attrs.field(default=8, validator=_bits, metadata=option(
        help="bits of the modules chosen for high precision"))
    high_group_size: int | None = attrs.field(default=None, validator=_optional_block, metadata=option(
        help="block size of the high-precision modules (scored algorithms; null: group_size)"))
    high_sym: bool | None = attrs.field(default=None, metadata=option(
        help="symmetric high-precision modules (scored algorithms; null: sym)"))
    ratio: float | None = attrs.field(default=None, metadata=option(
        help="share of the scored weights that keep the default bits, in (0, 1); required by "
             "the scored algorithms"))
    kld_memory_mode: str = attrs.field(default="auto", validator=_one_of(KLD_MEMORY_MODES), metadata=option(
        help="kld_gradient's memory plan (auto, full, multi_gpu, low_memory, offload); the "
             "scores are the same in every mode, and on the CPU every mode runs as full "
             "(multi_gpu and offload need CUDA devices: a warning says so)"))
    max_samples: int = attrs.field(default=256, validator=_positive, metadata=option(
        help="kld_gradient: calibration windows (Olive: 256)", aliases=("nsamples",)))
    max_seq_len: int = attrs.field(default=512, validator=_seq, metadata=option(
        help="kld_gradient: tokens per window (Olive: 512)", aliases=("seqlen",)))

    def __attrs_post_init__(self) -> None:
        if self.algorithm is None:
            raise ValueError(f"algorithm: required (one of {', '.join(K_QUANT + SCORED)}); Olive "
                             "only picks one itself when searching")
        if self.algorithm in SCORED and (self.ratio is None or not 0 < self.ratio < 1):
            raise ValueError(f"ratio: the {self.algorithm} algorithm needs a ratio between 0 and 1 "
                             f"(the share of weights kept at {self.bits} bits), got {self.ratio}")

    def unused_options(self) -> list[str]:
        """Options set that the chosen algorithm does not read (Olive ignores them; olivine warns)."""
        unused = []
        if self.algorithm in K_QUANT:
            unused += [n for n in ("ratio", "high_group_size", "high_sym") if getattr(self, n) is not None]
        if self.algorithm != "kld_gradient":
            unused += [n for n in ("data_config", "data_files", "data_name") if getattr(self, n)]
        return unused


def _weight_config(instance: Any, attribute: Any, value: dict[str, Any] | None) -> None:
    """``customized_weight_config``: node name -> any of bits, group_size."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"customized_weight_config: expected an object of node name -> "
                         f"{{bits, group_size}}, got {value!r}")
    for node, entry in value.items():
        where = f"customized_weight_config.{node}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with bits and/or group_size, got {entry!r}")
        for key, item in entry.items():
            if key not in ("bits", "group_size"):
                raise ValueError(f"{where}.{key}: unknown key; Olive reads bits and group_size")
            if key == "bits" and item not in (4, 8):
                raise ValueError(f"{where}.bits: expected 4 or 8, got {item!r}")
            if key == "group_size" and (not isinstance(item, int) or isinstance(item, bool)
                                        or not 16 <= item <= 256 or item & (item - 1)):
                raise ValueError(f"{where}.group_size: expected a power of two from 16 to 256, "
                                 f"got {item!r} (MatMulNBits runs no other block sizes)")


@attrs.frozen
class OnnxKQuantConfig(ExternalDataOptions):
    """Options of ``OnnxKQuantQuantization``."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=option(help="weight bits: 4 or 8"))
    block_size: int = attrs.field(default=32, validator=_block, metadata=option(
        help="weights per block along K (16, 32, 64, 128, 256); K need not be a multiple"))
    accuracy_level: int = attrs.field(default=0, validator=_accuracy, metadata=option(
        help="MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8"))
    customized_weight_config: dict[str, Any] | None = attrs.field(default=None, validator=_weight_config,
                                                                  metadata=option(
        help="per MatMul node name: bits and/or group_size (e.g. 8 bits for sensitive layers)"))
    nodes_to_exclude: list[str] | None = attrs.field(default=None, metadata=option(
        help="MatMul node names to leave in float"))


@attrs.frozen
class MatMulNBitsToQdqConfig(ExternalDataOptions):
    """Options of ``MatMulNBitsToQDQ``."""

    use_transpose_op: bool = attrs.field(default=False, metadata=option(
        help="DequantizeLinear to [N, K] then a Transpose; false transposes the stored weight"))
    use_int4: bool = attrs.field(default=False, metadata=option(
        help="int4 instead of uint4 for 4-bit weights (superseded by use_signed_int)"))
    use_signed_int: bool = attrs.field(default=False, metadata=option(
        help="signed weights (int4/int8, the MatMulNBits midpoint subtracted)"))
    add_zero_point: bool = attrs.field(default=False, metadata=option(
        help="keep a DequantizeLinear zero point even when it is all zeros (signed, symmetric)"))
    nodes_to_exclude: list[str] | None = attrs.field(default=None, metadata=option(
        help="MatMulNBits node names to leave as they are"))
