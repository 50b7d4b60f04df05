"""Options of the LoRA passes and the checks made before anything runs (no torch here)."""

from __future__ import annotations

import string
from typing import Any, Literal

import attrs

from olivine import component_problem, option
from olivine.onnxsave import ExternalDataOptions

TorchDtype = Literal["auto", "float32", "bfloat16", "float16"]

#: Olive's own LoRA targets for model types peft has no default for (peft's
#: ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` comes first, as in Olive).
OLIVE_TARGETS: dict[str, tuple[str, ...]] = {"phi3": ("o_proj", "qkv_proj")}

#: Training options that also have a place in ``training_args`` (Olive's form), with the
#: value used when neither gives one: Olive's ``HFTrainingArguments`` (learning rate,
#: constant schedule, warmup ratio, gradient checkpointing) over transformers'
#: ``TrainingArguments`` defaults (3 epochs, batch 8, seed 42, a checkpoint and a log line
#: every 500 steps). ``max_steps`` None: train ``num_train_epochs``.
TRAINING_DEFAULTS: dict[str, Any] = {
    "max_steps": None,
    "num_train_epochs": 3.0,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0.03,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "seed": 42,
    "save_steps": 500,
    "logging_steps": 500,
    "gradient_checkpointing": True,
}

#: ``training_args`` Olive sets beyond transformers' defaults that are not pass options:
#: one checkpoint kept (Olive trains in a temporary folder with ``save_total_limit`` 1).
#: QLoRA adds ``optim: paged_adamw_32bit`` (Olive's ``QLoRATrainingArguments``).
EXTRA_TRAINING_DEFAULTS: dict[str, Any] = {"save_total_limit": 1}
QLORA_TRAINING_DEFAULTS: dict[str, Any] = {**EXTRA_TRAINING_DEFAULTS, "optim": "paged_adamw_32bit"}

#: ``training_args`` keys that olivine sets itself: giving them is an error.
OWNED_TRAINING_ARGS = {
    "output_dir": "the pass writes checkpoints to the step's own state folder",
    "resume_from_checkpoint": "an interrupted step resumes from its own checkpoints (resume: true)",
    "overwrite_output_dir": "the pass writes checkpoints to the step's own state folder",
    "report_to": "olivine reports progress itself",
    "use_cpu": "the workflow's accelerator chooses the device",
    "fp16": "use torch_dtype",
    "bf16": "use torch_dtype",
    "push_to_hub": "olivine publishes into output_dir",
}

#: Olive's older spellings inside ``training_args``.
RENAMED_TRAINING_ARGS = {"evaluation_strategy": "eval_strategy", "batch_size": "per_device_train_batch_size"}


def _positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name}: must be greater than 0, got {value}")


def _at_least_one(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name}: must be at least 1, got {value}")


def _dropout(instance: Any, attribute: Any, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"lora_dropout: must be from 0 up to (not including) 1, got {value}")


def _eval_size(instance: Any, attribute: Any, value: float | None) -> None:
    if value is None:
        return
    if value <= 0 or (value >= 1 and value != int(value)):
        raise ValueError(f"eval_dataset_size: a fraction between 0 and 1 (0.1) or a number of rows "
                         f"(20), got {value}")


def _seq_len(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 8:
        raise ValueError(f"max_seq_len: must be at least 8 tokens, got {value}")


def template_fields(template: str) -> list[str]:
    """The column names a ``{column}`` template uses, in order; ``ValueError`` if malformed."""
    names: list[str] = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"text_template: malformed ({exc}); write columns as {{name}} and a "
                         "literal brace as {{ or }}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise ValueError(f"text_template: {{{field}}} is not a column name; write columns as "
                             "{name} (and a literal brace as {{ or }})")
        if spec or conversion:
            raise ValueError(f"text_template: {{{field}}} may not carry a format spec or conversion")
        if field not in names:
            names.append(field)
    if not names:
        raise ValueError("text_template: names no column; write columns as {name}, like "
                         "\"### Question: {instruction}\\n### Answer: {response}\"")
    return names


def _template(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None:
        template_fields(value)


def _targets(instance: Any, attribute: Any, value: list[str] | str | None) -> None:
    if isinstance(value, list) and not value:
        raise ValueError("target_modules: an empty list trains nothing; leave it out for the "
                         "architecture's default, or name modules like [\"q_proj\", \"v_proj\"]")
    if isinstance(value, list) and any(not v.strip() for v in value):
        raise ValueError("target_modules: module names may not be empty")


def _training_args(instance: Any, attribute: Any, value: dict[str, Any]) -> None:
    for key in value:
        if key in OWNED_TRAINING_ARGS:
            raise ValueError(f"training_args.{key}: not allowed; {OWNED_TRAINING_ARGS[key]}")


@attrs.frozen
class LoRAConfig:
    """Options of ``LoRA`` (Olive's names; ``olivine passes LoRA`` lists them)."""

    train_data_config: str = attrs.field(metadata=option(data_config=True,
        help="the data config to train on (local jsonl/json/csv/parquet/txt files through "
             "load_dataset_config.data_files, or a hub dataset through data_name)"))
    eval_data_config: str | None = attrs.field(default=None, metadata=option(
        data_config=True, help="a data config to evaluate on (eval loss and perplexity)"))
    eval_dataset_size: float | None = attrs.field(default=None, validator=_eval_size, metadata=option(
        aliases=("eval_split",),
        help="hold out this fraction (0.1) or number of rows (20) of the training data for "
             "evaluation when eval_data_config is not given"))
    lora_r: int = attrs.field(default=64, validator=_at_least_one, metadata=option(
        aliases=("r",), help="rank of the LoRA matrices"))
    lora_alpha: float = attrs.field(default=16.0, validator=_positive, metadata=option(
        aliases=("alpha",), help="LoRA scaling numerator: updates are scaled by alpha / r"))
    lora_dropout: float = attrs.field(default=0.05, validator=_dropout, metadata=option(
        aliases=("dropout",), help="dropout on the LoRA path's input while training "
                                   "(default 0.05, as Olive)"))
    target_modules: list[str] | str | None = attrs.field(default=None, validator=_targets, metadata=option(
        help="linear layers to adapt: names (q_proj), a regex string, or \"all-linear\"; "
             "null (Olive's default): peft's default for the architecture (Llama, Qwen2, "
             "Mistral: q_proj and v_proj), else Olive's (Phi-3: o_proj, qkv_proj), else an "
             "error asking for target_modules"))
    modules_to_save: list[str] | None = attrs.field(default=None, metadata=option(
        help="modules trained in full and saved with the adapter (an adapter with them can "
             "be merged, but not converted to an onnxruntime-genai adapter file)"))
    bias: Literal["none", "all", "lora_only"] = attrs.field(default="none", metadata=option(
        help="which biases to train (peft's bias option)"))
    torch_dtype: TorchDtype = attrs.field(default="bfloat16", metadata=option(
        help="base weights while training: bfloat16 (Olive's default; also on CPU), float32, "
             "float16 (fp32 weights, fp16 mixed precision; needs a CUDA GPU) or auto "
             "(float32 on cpu, bfloat16 on gpus that have it)"))
    max_steps: int | None = attrs.field(default=None, validator=_at_least_one, metadata=option(
        help="optimizer steps to train (wins over num_train_epochs; default: "
             "num_train_epochs)"))
    num_train_epochs: float | None = attrs.field(default=None, validator=_positive, metadata=option(
        aliases=("epochs",), help="passes over the training data (default 3)"))
    learning_rate: float | None = attrs.field(default=None, validator=_positive, metadata=option(
        help="peak learning rate of AdamW (default 2e-4)"))
    lr_scheduler_type: str | None = attrs.field(default=None, metadata=option(
        help="transformers schedule: constant (Olive's default), linear, cosine, "
             "constant_with_warmup, ..."))
    warmup_ratio: float | None = attrs.field(default=None, metadata=option(
        help="fraction of the steps spent warming the learning rate up (default 0.03; the "
             "constant schedule has no warmup)"))
    per_device_train_batch_size: int | None = attrs.field(default=None, validator=_at_least_one,
                                                          metadata=option(
        aliases=("batch_size",), help="sequences per step (default 8)"))
    gradient_accumulation_steps: int | None = attrs.field(default=None, validator=_at_least_one,
                                                          metadata=option(
        help="batches whose gradients add up to one optimizer step (default 1)"))
    max_seq_len: int | None = attrs.field(default=None, validator=_seq_len, metadata=option(
        help="tokens per sequence; longer rows are cut (default: the data config's "
             "pre_process_data_config.max_seq_len, else 1024)"))
    seed: int | None = attrs.field(default=None, metadata=option(
        help="seed of the LoRA initialization, data order and dropout (default 42)"))
    text_field: str | None = attrs.field(default=None, metadata=option(
        aliases=("text_cols",),
        help="the column holding each row's whole text (default: text, when no template)"))
    text_template: str | None = attrs.field(default=None, validator=_template, metadata=option(
        help="build each row's text from its columns, e.g. "
             "\"### Question: {instruction}\\n### Answer: {response}\""))
    use_chat_template: bool = attrs.field(default=False, metadata=option(
        help="render rows with the tokenizer's chat template: a messages column "
             "([{role, content}]) or instruction/prompt + response/answer columns"))
    save_steps: int | None = attrs.field(default=None, validator=_at_least_one, metadata=option(
        help="write a checkpoint every this many steps (default 500); an interrupted run "
             "resumes from the last one"))
    logging_steps: int | None = attrs.field(default=None, validator=_at_least_one, metadata=option(
        help="log the loss every this many steps (default 500)"))
    resume: bool = attrs.field(default=True, metadata=option(
        help="resume an interrupted run of the same step from its last checkpoint"))
    device_map: Literal["auto", "current_device"] | None = attrs.field(default="auto", metadata=option(
        help="where the base model is loaded: auto (accelerate places it: the GPUs when torch "
             "sees any, else the CPU), current_device (the current CUDA device; an error on a "
             "machine without one), or null (loaded on the CPU, then moved by the Trainer)"))
    allow_tf32: bool = attrs.field(default=True, metadata=option(
        help="let CUDA matmuls use TF32 while training (Ampere and later GPUs; CPUs have no "
             "TF32, so there it changes nothing)"))
    ephemeral_gpu_offload: bool = attrs.field(default=False, metadata=option(
        help="peft's ephemeral GPU offload (LoRA and DoRA: DoRA's initialization of layers "
             "kept on the CPU runs on the GPU); needs a CUDA device, an error without one"))
    gradient_checkpointing: bool | None = attrs.field(default=None, metadata=option(
        help="recompute activations in the backward pass: less memory, slower steps "
             "(default true, as Olive)"))
    training_args: dict[str, Any] = attrs.field(factory=dict, validator=_training_args, metadata=option(
        help="other transformers TrainingArguments (Olive's training_args); the options "
             "above may also be given here"))

    def __attrs_post_init__(self) -> None:
        chosen = [n for n in ("text_field", "text_template") if getattr(self, n) is not None]
        if self.use_chat_template:
            chosen.append("use_chat_template")
        if len(chosen) > 1:
            raise ValueError(f"{chosen[1]}: give one of text_field, text_template and "
                             f"use_chat_template (got {' and '.join(chosen)})")
        if self.max_steps is not None and self.num_train_epochs is not None:
            raise ValueError("num_train_epochs: give max_steps or num_train_epochs, not both")
        for key, value in self.training_args.items():
            name = RENAMED_TRAINING_ARGS.get(key, key)
            own = getattr(self, name, None) if name in TRAINING_DEFAULTS else None
            if own is not None and value != own:
                raise ValueError(f"training_args.{key}: {value!r} conflicts with {name}: {own!r}; "
                                 "give it in one place")

    def training_value(self, name: str) -> Any:
        """The effective value of a training option: the field, ``training_args``, the default."""
        own = getattr(self, name)
        if own is not None:
            return own
        for key, value in self.training_args.items():
            if RENAMED_TRAINING_ARGS.get(key, key) == name:
                return value
        return TRAINING_DEFAULTS[name]

    def extra_training_args(self) -> dict[str, Any]:
        """``training_args`` entries that are not options of this pass, Olive names renamed."""
        out = {}
        for key, value in self.training_args.items():
            name = RENAMED_TRAINING_ARGS.get(key, key)
            if name not in TRAINING_DEFAULTS:
                out[name] = value
        return out


def _save_quant_config(instance: Any, attribute: Any, value: bool) -> None:
    if value:
        raise ValueError("save_quant_config: only false is supported: olivine saves the adapter "
                         "for the full-precision base model, and the next steps load that base "
                         "unquantized (Olive's true makes them load it in 4 bits with bitsandbytes, "
                         "which no olivine exporter takes); set save_quant_config: false")


def _qlora_targets(instance: Any, attribute: Any, value: list[str] | str | None) -> None:
    if value is not None:
        raise ValueError("target_modules: QLoRA adapts every linear layer that it quantizes to 4 "
                         "bits (Olive's rule: Olive replaces any target_modules with them); leave "
                         "it out, or use LoRA to choose the layers")


@attrs.frozen
class QLoRAConfig(LoRAConfig):
    """Options of ``QLoRA``: those of ``LoRA`` plus the 4-bit quantization of the base model."""

    target_modules: list[str] | str | None = attrs.field(default=None, validator=_qlora_targets,
                                                         metadata=option(
        help="null only: QLoRA adapts every 4-bit linear layer (all but the output head), as "
             "Olive does"))

    compute_dtype: TorchDtype | None = attrs.field(default=None, metadata=option(
        help="dtype of the 4-bit layers' matmuls (default: torch_dtype)"))
    quant_type: Literal["nf4", "fp4"] = attrs.field(default="nf4", metadata=option(
        help="4-bit data type of the frozen base weights"))
    double_quant: bool = attrs.field(default=False, metadata=option(
        help="quantize the quantization constants too (saves about 0.4 bit per weight)"))
    save_quant_config: bool = attrs.field(default=False, validator=_save_quant_config, metadata=option(
        help="false: the output adapter is for the full-precision base model (the only "
             "supported value; Olive's default true is refused)"))


@attrs.frozen
class MergeConfig:
    """Options of ``MergeAdapterWeights``."""

    torch_dtype: TorchDtype = attrs.field(default="auto", metadata=option(
        help="dtype of the merged weights: auto keeps the base model's"))


def _adapter_file(instance: Any, attribute: Any, value: str) -> None:
    problem = component_problem(value)
    if problem is not None:  # the name is joined to the step's folder: it must stay inside
        raise ValueError(f"adapter_file_name: {value!r} {problem}; give a file name ending in "
                         ".onnx_adapter")
    if not value.endswith(".onnx_adapter"):
        raise ValueError(f"adapter_file_name: a file name ending in .onnx_adapter, got {value!r}")


def _make_inputs(instance: Any, attribute: Any, value: bool) -> None:
    if not value:
        raise ValueError("make_inputs: only true is supported: the LoRA weights become model "
                         "inputs that onnxruntime-genai's Adapters feed at run time")


@attrs.frozen
class ExtractAdaptersConfig(ExternalDataOptions):
    """Options of ``ExtractAdapters`` (and Olive's external-data options for the model file)."""

    adapter_type: Literal["lora", "dora", "loha"] = attrs.field(default="lora", metadata=option(
        help="the adapter whose weights become inputs: lora (the LoRA MatMuls ModelBuilder "
             "writes); dora and loha weights cannot become inputs here: a model without them "
             "(merged before the conversion) passes through unchanged, as in Olive, and one "
             "with them is an error"))
    make_inputs: bool = attrs.field(default=True, validator=_make_inputs, metadata=option(
        help="turn the LoRA weights into model inputs (the only supported form)"))
    dynamic_lora_r: bool = attrs.field(default=True, metadata=option(
        help="leave the rank dimension of the LoRA inputs free, so adapters of any rank load"))
    optional_inputs: bool = attrs.field(default=True, metadata=option(
        help="give each LoRA input an empty default (rank 0), so the model runs as the base "
             "model when no adapter is set; false: every LoRA input must be fed"))
    save_format: Literal["onnx_adapter"] = attrs.field(default="onnx_adapter", metadata=option(
        help="adapter file format: onnx_adapter (what onnxruntime-genai's Adapters load)"))
    adapter_file_name: str = attrs.field(default="adapter.onnx_adapter", validator=_adapter_file,
                                         metadata=option(help="name of the adapter file written "
                                                              "beside the model"))
    adapter_path: str | None = attrs.field(default=None, metadata=option(input_path=True,
        help="write the adapter file from this peft adapter folder (exact float weights) "
             "instead of the weights found in the model (dequantized when int4/int8)"))
