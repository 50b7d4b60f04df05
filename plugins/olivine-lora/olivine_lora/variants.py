"""Options of ``DoRA``, ``LoHa`` and ``LoKr``, and the peft config each trains with (no torch here).

Olive's names and defaults. DoRA is LoRA with peft's ``use_dora``. LoHa (Hadamard product of
two low-rank pairs) and LoKr (Kronecker product) have their own peft tuners and options; the
LoRA-only options they inherit in Olive (``lora_dropout``, ``ephemeral_gpu_offload``, ``bias``)
would be ignored there, so here setting them is a config error.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine import option
from olivine_lora.config import LoRAConfig, QLoRAConfig, _targets


def _probability(instance: Any, attribute: Any, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name}: must be from 0 up to (not including) 1, got {value}")


def _no_lora_dropout(instance: Any, attribute: Any, value: float) -> None:
    if value:
        kind = type(instance).__name__.removesuffix("Config")
        raise ValueError(f"{attribute.name}: {kind} has no LoRA path for this to apply to; "
                         "use rank_dropout or module_dropout (or leave it out)")


def _no_offload(instance: Any, attribute: Any, value: bool) -> None:
    if value:
        kind = type(instance).__name__.removesuffix("Config")
        raise ValueError(f"ephemeral_gpu_offload: peft's ephemeral GPU offload is for LoRA and "
                         f"DoRA layers; {kind} has none; leave it out")


def _no_bias(instance: Any, attribute: Any, value: str) -> None:
    if value != "none":
        kind = type(instance).__name__.removesuffix("Config")
        raise ValueError(f"bias: {kind} trains no biases (peft's {kind} has no bias option); "
                         "leave it out or use LoRA")


def _patterns(instance: Any, attribute: Any, value: dict[str, Any]) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{attribute.name}: keys are layer names or regular expressions, "
                             f"got {key!r}")
        if isinstance(item, bool) or not isinstance(item, int | float) or item <= 0:
            raise ValueError(f"{attribute.name}.{key}: a number greater than 0, got {item!r}")
        if attribute.name == "rank_pattern" and item != int(item):
            raise ValueError(f"rank_pattern.{key}: a whole rank, got {item!r}")


def _layers(instance: Any, attribute: Any, value: list[int] | None) -> None:
    if value is not None and (not value or any(v < 0 for v in value)):
        raise ValueError(f"layers_to_transform: layer indices from 0, got {value}")


def _decompose_factor(instance: Any, attribute: Any, value: int) -> None:
    if value != -1 and value < 1:
        raise ValueError(f"decompose_factor: -1 (the most balanced factorization) or a factor "
                         f"of at least 1, got {value}")


@attrs.frozen
class DoRAConfig(LoRAConfig):
    """Options of ``DoRA``: those of ``LoRA`` (DoRA adds a trained magnitude per output feature)."""


@attrs.frozen
class LoHaConfig(LoRAConfig):
    """Options of ``LoHa``: the LoRA options that apply, plus peft's LoHa options."""

    lora_dropout: float = attrs.field(default=0.0, validator=_no_lora_dropout, metadata=option(
        aliases=("dropout",),
        help="0 only: LoHa and LoKr have no LoRA path (Olive accepts and ignores it); use "
             "rank_dropout and module_dropout"))
    ephemeral_gpu_offload: bool = attrs.field(default=False, validator=_no_offload, metadata=option(
        help="LoRA and DoRA only: false here (Olive accepts and ignores it)"))
    bias: Literal["none", "all", "lora_only"] = attrs.field(default="none", validator=_no_bias,
                                                          metadata=option(
        help="none: LoHa and LoKr train no biases"))
    rank_dropout: float = attrs.field(default=0.0, validator=_probability, metadata=option(
        help="dropout on the rank dimension while training"))
    module_dropout: float = attrs.field(default=0.0, validator=_probability, metadata=option(
        help="probability of switching an adapted layer off for a training step"))
    use_effective_conv2d: bool = attrs.field(default=True, metadata=option(
        help="parameter-efficient decomposition of Conv2d layers with kernels over 1x1 "
             "(applies to Conv2d targets only)"))
    exclude_modules: list[str] | str | None = attrs.field(default=None, metadata=option(
        help="modules not to adapt: names or a regular expression"))
    init_weights: bool = attrs.field(default=True, metadata=option(
        help="true: the adapter starts as a no-op (peft's initialization); false: random "
             "(for tests)"))
    target_modules: list[str] | str | None = attrs.field(default=None, validator=_targets, metadata=option(
        help="layers to adapt: names (q_proj), a regex string, or \"all-linear\" (the "
             "default, as in Olive: every linear layer but the output head)"))
    layers_to_transform: list[int] | None = attrs.field(default=None, validator=_layers, metadata=option(
        help="adapt only these layer indices"))
    layers_pattern: list[str] | None = attrs.field(default=None, metadata=option(
        help="the name of the layer list (layers, h) when layers_to_transform is given"))
    rank_pattern: dict[str, int] = attrs.field(factory=dict, validator=_patterns, metadata=option(
        help="{layer name or regex: rank} for layers whose rank differs from r"))
    alpha_pattern: dict[str, float] = attrs.field(factory=dict, validator=_patterns, metadata=option(
        help="{layer name or regex: alpha} for layers whose alpha differs from alpha"))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.layers_pattern is not None and self.layers_to_transform is None:
            raise ValueError("layers_pattern: applies only with layers_to_transform; give both "
                             "or neither")


@attrs.frozen
class LoKrConfig(LoHaConfig):
    """Options of ``LoKr``: those of ``LoHa`` plus the Kronecker factorization's."""

    decompose_both: bool = attrs.field(default=False, metadata=option(
        help="also decompose the left Kronecker factor into a low-rank pair"))
    decompose_factor: int = attrs.field(default=-1, validator=_decompose_factor, metadata=option(
        help="the Kronecker factorization's factor (-1: the most balanced one)"))
    rank_dropout_scale: bool = attrs.field(default=False, metadata=option(
        help="rescale by the kept fraction when rank_dropout drops ranks"))


#: The method name recorded for each config class (``olivine_training.json``, the handle).
METHODS: dict[type, str] = {LoRAConfig: "lora", QLoRAConfig: "qlora", DoRAConfig: "dora",
                            LoHaConfig: "loha", LoKrConfig: "lokr"}


def method_of(config: LoRAConfig) -> str:
    """``lora``, ``qlora``, ``dora``, ``loha`` or ``lokr``."""
    return METHODS[type(config)]


def default_targets(config: LoRAConfig) -> str | None:
    """The targets Olive gives a variant without ``target_modules`` (``None``: LoRA's rule)."""
    return "all-linear" if isinstance(config, LoHaConfig) else None


def peft_config(config: LoRAConfig, targets: list[str] | str, device: str) -> Any:
    """The peft config that trains the adapter ``config`` asks for on ``targets``."""
    import peft

    if isinstance(config, LoHaConfig):
        common: dict[str, Any] = {
            "r": config.lora_r, "alpha": config.lora_alpha, "rank_dropout": config.rank_dropout,
            "module_dropout": config.module_dropout,
            "use_effective_conv2d": config.use_effective_conv2d, "target_modules": targets,
            "exclude_modules": config.exclude_modules, "init_weights": config.init_weights,
            "layers_to_transform": config.layers_to_transform,
            "layers_pattern": config.layers_pattern,
            "rank_pattern": {k: int(v) for k, v in config.rank_pattern.items()},
            "alpha_pattern": dict(config.alpha_pattern), "modules_to_save": config.modules_to_save,
            "task_type": "CAUSAL_LM"}
        if isinstance(config, LoKrConfig):
            return peft.LoKrConfig(decompose_both=config.decompose_both,
                                   decompose_factor=config.decompose_factor,
                                   rank_dropout_scale=config.rank_dropout_scale, **common)
        return peft.LoHaConfig(**common)
    runtime = peft.LoraRuntimeConfig(ephemeral_gpu_offload=config.ephemeral_gpu_offload)
    # a plain mapping: peft types ``bias`` as a Literal that the attrs field's str does not narrow to
    lora: dict[str, Any] = {
        "r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": targets, "bias": config.bias, "modules_to_save": config.modules_to_save,
        "use_dora": isinstance(config, DoRAConfig), "runtime_config": runtime,
        "task_type": "CAUSAL_LM"}
    return peft.LoraConfig(**lora)
