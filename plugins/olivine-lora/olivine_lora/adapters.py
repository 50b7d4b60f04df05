"""peft adapter folders: finding them, reading them, and checking them against a base model.

Reading needs only safetensors and numpy; the checks against a loaded model take the
model's linear layers as ``{name: (in_features, out_features)}``, so nothing here
imports torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine import UsageError, did_you_mean

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")
#: LoHa's and LoKr's factors (peft saves them without an adapter name or ``.weight``).
_FACTOR = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\."
                     r"(?P<part>hada_w[12]_[ab]|lokr_w[12](?:_[ab])?)$")


def find_adapter_dir(path: str | Path) -> Path:
    """The peft adapter folder at ``path``: the folder itself or its ``adapter/`` sub-folder.

    ``olivine finetune`` writes the adapter into ``OUTPUT/adapter``; both forms are accepted.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"adapter {str(path)!r}: no such folder")
    for candidate in (p, p / "adapter"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate.resolve()
    raise UsageError(f"{str(path)!r} is not a peft adapter folder (no {ADAPTER_CONFIG} in it or in "
                     "its adapter/ folder); give the output of `olivine finetune` or of peft's "
                     "save_pretrained")


@attrs.frozen
class LoraModule:
    """One adapted linear layer: its module path, rank, sizes and scaling."""

    module: str
    rank: int
    in_features: int
    out_features: int
    scaling: float


@attrs.frozen
class PeftAdapter:
    """A peft LoRA adapter read from disk: its config and its tensors (numpy, by saved key)."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, Any]

    @property
    def base_name(self) -> str:
        """The base model the adapter names (``base_model_name_or_path``), or ``""``."""
        return str(self.config.get("base_model_name_or_path") or "")

    def lora_pairs(self) -> dict[str, tuple[str, str]]:
        """``{module path: (key of lora_A, key of lora_B)}`` for every adapted linear layer."""
        found: dict[str, dict[str, str]] = {}
        for key in self.tensors:
            m = _KEY.match(key)
            if m:
                found.setdefault(m["module"], {})[m["ab"]] = key
        pairs = {}
        for module, parts in found.items():
            if set(parts) != {"A", "B"}:
                raise UsageError(f"adapter {self.folder}: {module} has lora_{next(iter(parts))} "
                                 "but not its partner; the adapter file is incomplete")
            pairs[module] = (parts["A"], parts["B"])
        return pairs

    def modules(self) -> list[LoraModule]:
        """Every adapted linear layer with its rank, sizes and the scaling peft applies."""
        out = []
        for module, (key_a, key_b) in sorted(self.lora_pairs().items()):
            a, b = self.tensors[key_a], self.tensors[key_b]
            rank, in_features = a.shape
            out_features = b.shape[0]
            out.append(LoraModule(module, int(rank), int(in_features), int(out_features),
                                  self.scaling(module, int(rank))))
        return out

    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module path: (in_features, out_features)}`` of every adapted linear layer, for
        LoRA (and DoRA) pairs, LoHa's Hadamard factors and LoKr's Kronecker factors."""
        shapes = {m.module: (m.in_features, m.out_features) for m in self.modules()}
        parts: dict[str, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            m = _FACTOR.match(key)
            if m and len(value.shape) == 2:
                parts.setdefault(m["module"], {})[m["part"]] = value.shape
        for module, found in parts.items():
            if "hada_w1_a" in found and "hada_w1_b" in found:
                shapes[module] = (int(found["hada_w1_b"][1]), int(found["hada_w1_a"][0]))
                continue
            factors = []
            for w in ("lokr_w1", "lokr_w2"):
                if w in found:
                    factors.append(found[w])
                elif f"{w}_a" in found and f"{w}_b" in found:
                    factors.append((found[f"{w}_a"][0], found[f"{w}_b"][1]))
            if len(factors) == 2:
                shapes[module] = (int(factors[0][1] * factors[1][1]),
                                  int(factors[0][0] * factors[1][0]))
        return shapes

    def scaling(self, module: str, rank: int) -> float:
        """peft's scaling of ``module``: alpha / r (alpha / sqrt(r) with rsLoRA)."""
        alpha = float(self.config.get("lora_alpha", 8))
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                alpha = float(value)
                break
        if self.config.get("use_rslora"):
            return alpha / rank ** 0.5
        return alpha / rank

    def unsupported_for_onnx(self) -> list[str]:
        """Reasons this adapter cannot become LoRA inputs of an ONNX model (``[]`` if it can)."""
        reasons = []
        if str(self.config.get("peft_type", "LORA")).upper() != "LORA":
            reasons.append(f"it is a {self.config.get('peft_type')} adapter, not LoRA")
        if self.config.get("use_dora"):
            reasons.append("it uses DoRA (use_dora), whose magnitude vectors have no LoRA input")
        if self.config.get("modules_to_save"):
            reasons.append(f"it trains whole modules ({', '.join(self.config['modules_to_save'])}; "
                           "modules_to_save)")
        if self.config.get("bias", "none") != "none" or self.config.get("lora_bias"):
            reasons.append("it trains biases")
        others = [k for k in self.tensors if not _KEY.match(k)]
        if others and not reasons:
            reasons.append(f"it holds weights that are not LoRA pairs ({others[0]}, ...)")
        return reasons


def read_adapter(path: str | Path) -> PeftAdapter:
    """Read a peft adapter folder (``adapter_config.json`` and its weights) into numpy."""
    folder = find_adapter_dir(path)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{folder / ADAPTER_CONFIG}: not valid JSON ({exc})") from None
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise UsageError(f"adapter {folder}: no {WEIGHT_FILES[0]}; the adapter's weights are missing")
    if weights.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = dict(load_file(str(weights)))
    else:
        import torch

        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        tensors = {k: v.float().numpy() for k, v in state.items()}
    if not tensors:
        raise UsageError(f"adapter {folder}: {weights.name} holds no tensors")
    return PeftAdapter(folder, config, tensors)


def summarize_layers(names: Iterable[str]) -> str:
    """Distinct last parts of module names with one full example each: ``q_proj (model...q_proj)``."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.rsplit(".", 1)[-1], name)
    return ", ".join(f"{short} ({full})" if short != full else short for short, full in seen.items())


def check_adapter_fits(adapter: PeftAdapter, layers: Mapping[str, tuple[int, int]],
                       base_name: str) -> None:
    """Raise :class:`UsageError` unless every adapted layer exists in the base with its sizes.

    ``layers`` maps the base model's linear layer names to ``(in_features, out_features)``.
    """
    named = f" (its adapter_config.json names base {adapter.base_name!r})" if adapter.base_name else ""
    problems = []
    for module, (in_features, out_features) in sorted(adapter.layer_shapes().items()):
        if module not in layers:
            problems.append(f"{module} is not a linear layer of {base_name}"
                            f"{did_you_mean(module, list(layers))}")
            continue
        have = layers[module]
        if have != (in_features, out_features):
            problems.append(f"{module} maps {have[0]} -> {have[1]} features in {base_name}, but "
                            f"the adapter's matrices are for {in_features} -> {out_features}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UsageError(f"adapter {adapter.folder} does not fit base model {base_name}: it was "
                         f"trained for a different model{named}: " + "; ".join(problems[:3]) + more)


def match_targets(targets: list[str] | str, layers: Iterable[str]) -> dict[str, list[str]]:
    """``{target: [matching linear layer names]}`` by peft's rules (exact, or ``.name`` suffix;
    a string is a regex matched against the whole name; ``all-linear`` matches all)."""
    names = list(layers)
    if isinstance(targets, str):
        if targets == "all-linear":
            return {targets: names}
        rx = re.compile(targets)
        return {targets: [n for n in names if rx.fullmatch(n)]}
    return {t: [n for n in names if n == t or n.endswith("." + t)] for t in targets}


def check_targets(targets: list[str] | str, layers: Mapping[str, tuple[int, int]],
                  model_name: str) -> None:
    """Raise :class:`UsageError` naming each target that matches no linear layer (and the layers)."""
    matches = match_targets(targets, layers)
    empty = [t for t, found in matches.items() if not found]
    if not empty:
        return
    shorts = sorted({n.rsplit(".", 1)[-1] for n in layers})
    hint = did_you_mean(empty[0], shorts) if isinstance(targets, list) else ""
    raise UsageError(f"target_modules: {', '.join(repr(t) for t in empty)} "
                     f"match{'es' if len(empty) == 1 else ''} no linear layer of {model_name}{hint}; "
                     f"its linear layers: {summarize_layers(layers)}")
