"""``IncAutoRound``: Intel Neural Compressor's AutoRound on a Hugging Face model.

AutoRound (sign-gradient descent on each weight's rounding and its block's min/max,
block by block, on calibration text) runs through ``neural_compressor.torch``'s
``prepare``/``convert`` with an ``AutoRoundConfig``; the rounded model is written in the
GPTQ checkpoint format (AutoRound's ``auto_gptq`` export), which ``ModelBuilder`` reads.
Olive 0.13 has no AutoRound pass; the option names are INC's (``bits``, ``group_size``,
``use_sym`` also ``sym``, ``iters``, ``lr``, ``nsamples``, ``seqlen``, ...) and the
calibration options are those of olivine's ``Gptq`` (``data_config``, ``data_files``, ...).

Needs ``pip install 'olivine-inc[torch]'`` (neural-compressor-pt and auto-round; see the
plugin's README for the versions and what each needs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import attrs

import olivine
from olivine import Accelerator, HfModel, ModelHandle, Pass, PassContext, UsageError
from olivine_weightquant.config import CalibrationFields

#: Weight bits the GPTQ checkpoint reader of the model builder takes.
BITS = (4, 8)
GROUPS = (-1, 16, 32, 64, 128, 256)


def _bits(instance: Any, attribute: Any, value: int) -> None:
    if value not in BITS:
        raise ValueError(f"bits: {value} is not supported; ModelBuilder reads 4- or 8-bit GPTQ "
                         "checkpoints (bits 4 or 8)")


def _group(instance: Any, attribute: Any, value: int) -> None:
    if value not in GROUPS:
        raise ValueError(f"group_size: {value} is not supported; use one of "
                         f"{', '.join(map(str, GROUPS))} (-1: one block per row)")


def _positive(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name}: must be at least 1, got {value}")


def _non_negative(instance: Any, attribute: Any, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: must be 0 or more, got {value}")


def _rate(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name}: must be positive (null: 1/iters), got {value}")


@attrs.frozen
class IncAutoRoundConfig(CalibrationFields):
    """Options of ``IncAutoRound`` (INC's ``AutoRoundConfig`` names, olivine's calibration fields)."""

    bits: int = attrs.field(default=4, validator=_bits, metadata=olivine.option(help="weight bits: 4 or 8"))
    group_size: int = attrs.field(default=128, validator=_group, metadata=olivine.option(
        help="weights per block (16..256), or -1 (one block per row); INC's default 128"))
    use_sym: bool = attrs.field(default=True, metadata=olivine.option(
        help="symmetric blocks (INC's W4A16 scheme); false fits a zero point per block",
        aliases=("sym",)))
    iters: int = attrs.field(default=200, validator=_non_negative, metadata=olivine.option(
        help="optimization steps per decoder block (0: round to nearest with AutoRound's "
                "min/max search only)"))
    lr: float | None = attrs.field(default=None, validator=_rate, metadata=olivine.option(
        help="learning rate of the rounding offsets (null: 1/iters)"))
    minmax_lr: float | None = attrs.field(default=None, validator=_rate, metadata=olivine.option(
        help="learning rate of the blocks' min/max scales (null: lr)"))
    enable_minmax_tuning: bool = attrs.field(default=True, metadata=olivine.option(
        help="also tune each block's min/max (its scale and zero point)"))
    enable_quanted_input: bool = attrs.field(default=True, metadata=olivine.option(
        help="tune each decoder block on the outputs of the already quantized blocks before it"))
    batch_size: int = attrs.field(default=8, validator=_positive, metadata=olivine.option(
        help="calibration windows per optimization step"))
    gradient_accumulate_steps: int = attrs.field(default=1, validator=_positive, metadata=olivine.option(
        help="batches per optimization step"))
    nblocks: int = attrs.field(default=1, validator=_positive, metadata=olivine.option(
        help="decoder blocks tuned together"))
    not_use_best_mse: bool = attrs.field(default=False, metadata=olivine.option(
        help="keep the last step's rounding instead of the one with the least block output MSE"))
    dynamic_max_gap: int = attrs.field(default=-1, metadata=olivine.option(
        help="stop a block's tuning after this many steps without improvement (-1: never)"))
    quant_lm_head: bool = attrs.field(default=False, metadata=olivine.option(
        help="also quantize the LM head (an untied one; a tied table stays float)",
        aliases=("lm_head",)))


def _problems(config: IncAutoRoundConfig) -> list[str]:
    from olivine_weightquant.config import calibration_problems

    out = calibration_problems(config, False)
    if config.batch_size > config.max_samples:
        out.append(f"batch_size: {config.batch_size} is larger than max_samples "
                   f"({config.max_samples}); AutoRound would have no full batch")
    return out


class IncAutoRound(Pass):
    """AutoRound weight-only quantization through neural_compressor.torch; GPTQ-format output."""

    name: ClassVar[str] = "IncAutoRound"
    aliases: ClassVar[tuple[str, ...]] = ("AutoRound", "autoround")
    Config: ClassVar[type] = IncAutoRoundConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "neural_compressor_pt",
                                            "auto_round")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator, model: ModelHandle | None = None) -> list[str]:
        """Calibration data given once; block sizes the input's layer widths can take."""
        out = _problems(config)
        if isinstance(model, HfModel) and model.is_local():
            from olivine_weightquant.hf_checkpoint import read_config

            try:
                raw = read_config(Path(model.path))
            except UsageError as exc:
                return [*out, str(exc)]
            raw = raw or {}
            nested = raw.get("text_config")
            text: dict[str, Any] = nested if isinstance(nested, dict) else dict(raw)
            widths = [text.get(k) for k in ("hidden_size", "intermediate_size")]
            if config.group_size > 0 and any(isinstance(w, int) and w % config.group_size
                                             for w in widths):
                out.append(f"group_size: {config.group_size} does not divide the layer widths "
                           f"{widths} of {model.path}; the GPTQ checkpoint needs whole blocks")
        return out

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Tune the rounding on the calibration windows and write a GPTQ-format folder."""
        from transformers import AutoTokenizer

        from olivine_weightquant.data import token_windows
        from olivine_weightquant.passes import calibration_source, local_folder

        if not isinstance(model, HfModel):
            raise UsageError(f"{self.name} takes Hugging Face models, got a {model.kind} model")
        if model.adapter_path:
            raise UsageError(f"{self.name}: merge the LoRA adapter into the model first")
        problems = _problems(config)
        if problems:
            raise UsageError(problems[0])
        source = calibration_source(config, context, self.name)
        folder = local_folder(model)
        trust = bool(model.load_options().get("trust_remote_code", False))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
        context.progress(0, None, f"tokenizing calibration text ({source.describe()})")
        windows = token_windows(source, tokenizer)
        context.progress(0, None, f"AutoRound on {windows.shape[0]} x {windows.shape[1]} tokens")
        summary = quantize_autoround(folder, Path(context.work_dir), config, windows, tokenizer,
                                     trust_remote_code=trust)
        attributes = {**model.attrs_dict(), "quantization": {
            "method": "autoround", "bits": config.bits, "group_size": config.group_size,
            "sym": config.use_sym, **summary}}
        return HfModel(path=str(context.work_dir), task=model.task, load_kwargs=model.load_kwargs,
                       attributes=attributes)


def _inc_imports() -> tuple[Any, Any, Any]:
    try:
        from neural_compressor.torch.quantization import AutoRoundConfig, convert, prepare
    except ImportError as exc:
        raise UsageError(f"IncAutoRound needs neural-compressor-pt and auto-round: {exc}; "
                         "pip install 'olivine-inc[torch]'") from None
    return AutoRoundConfig, prepare, convert


def quantize_autoround(folder: Path, output: Path, config: IncAutoRoundConfig, windows: Any,
                       tokenizer: Any, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Run INC's AutoRound on the model in ``folder``; write the GPTQ checkpoint into ``output``.

    ``windows`` ([S, L] token ids) are fed through INC's ``prepare``d model, which records
    them as AutoRound's calibration batches. Returns facts for the output's attributes.
    """
    import torch
    from transformers import AutoModelForCausalLM

    auto_round_config, prepare, convert = _inc_imports()
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    staging = output / "autoround"
    quant_config = auto_round_config(
        bits=config.bits, group_size=config.group_size, use_sym=config.use_sym,
        iters=config.iters, lr=config.lr, minmax_lr=config.minmax_lr,
        enable_minmax_tuning=config.enable_minmax_tuning,
        enable_quanted_input=config.enable_quanted_input, batch_size=config.batch_size,
        gradient_accumulate_steps=config.gradient_accumulate_steps, nblocks=config.nblocks,
        not_use_best_mse=config.not_use_best_mse, dynamic_max_gap=config.dynamic_max_gap,
        quant_lm_head=config.quant_lm_head, seed=config.seed,
        nsamples=int(windows.shape[0]), seqlen=int(windows.shape[1]),
        amp=False, device_map="cpu", export_format="auto_gptq", output_dir=str(staging),
        reloading=False)
    prepared = prepare(model, quant_config)
    with torch.no_grad():
        for row in windows:
            prepared(row[None])
    convert(prepared)
    written = _find_checkpoint(staging)
    for item in written.iterdir():
        target = output / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(str(output))
    qc = json.loads((output / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "gptq":
        raise UsageError(f"AutoRound wrote no GPTQ checkpoint into {output} (quantization_config: "
                         f"{qc!r}); check the neural-compressor-pt and auto-round versions")
    return {"calibration": {"windows": int(windows.shape[0]), "tokens": int(windows.numel())},
            "iters": config.iters, "library": "neural-compressor-pt + auto-round"}


def _find_checkpoint(staging: Path) -> Path:
    """The folder AutoRound wrote its config.json into (it may add a subfolder per scheme)."""
    if (staging / "config.json").is_file():
        return staging
    found = sorted(p.parent for p in staging.rglob("config.json"))
    if not found:
        raise UsageError(f"AutoRound wrote no checkpoint under {staging}")
    return found[0]
