"""LoRA and QLoRA training with peft and the transformers Trainer.

Progress goes to ``context.progress`` once per optimizer step (at most a few times a
second), checkpoints to the step's state folder (:mod:`olivine_lora.checkpoints`), and
an interrupted run of the same step resumes from its last complete checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from olivine import AdapterModel, HfModel, UsageError
from olivine_lora.adapters import check_targets
from olivine_lora.checkpoints import last_complete_checkpoint, state_dir_for
from olivine_lora.config import (
    EXTRA_TRAINING_DEFAULTS,
    OLIVE_TARGETS,
    QLORA_TRAINING_DEFAULTS,
    LoRAConfig,
    QLoRAConfig,
)
from olivine_lora.data import TextOptions, load_rows, render_texts, split_eval, text_options

TRAINING_RECORD = "olivine_training.json"
ADAPTER_DIR = "adapter"


# -- models ----------------------------------------------------------------------------------
def training_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str, device: str) -> Any:
    """The torch dtype for a config value (``auto``: float32 on cpu, bfloat16 on gpus with it)."""
    import torch

    if name == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def model_type(handle: HfModel) -> str:
    """``model_type`` from the model's config.json (``""`` when it cannot be read)."""
    path = Path(handle.path) / "config.json"
    try:
        return str(json.loads(path.read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def load_tokenizer(handle: HfModel) -> Any:
    """The base model's tokenizer, with a pad token (its EOS when it has none)."""
    from transformers import AutoTokenizer

    options = handle.load_options()
    kwargs = {k: options[k] for k in ("trust_remote_code", "revision") if k in options}
    try:
        tokenizer = AutoTokenizer.from_pretrained(handle.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the tokenizer of {handle.path}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(handle: HfModel, dtype: Any, quantization: Any = None, device: str = "cpu",
               device_map: Any = None) -> Any:
    """The base causal LM (``quantization``: a BitsAndBytesConfig for QLoRA; ``device_map``:
    transformers' placement, see :func:`resolve_device_map`)."""
    from transformers import AutoModelForCausalLM

    kwargs = {k: v for k, v in handle.load_options().items() if k not in ("torch_dtype", "dtype")}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs.setdefault("device_map", {"": device if device == "cpu" else 0})
    try:
        model = AutoModelForCausalLM.from_pretrained(handle.path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {handle.path} as a causal language model: {exc}") from None
    model.config.use_cache = False
    return model


def resolve_device_map(name: str | None, device: str) -> Any:
    """transformers' ``device_map`` for Olive's option: ``auto`` (accelerate's placement on the
    GPUs; the CPU when there is none), ``current_device`` (the current CUDA device) or ``None``."""
    import torch

    if name == "current_device":
        return {"": torch.cuda.current_device()}
    if name == "auto" and device == "cuda":
        return "auto"
    return None  # on the CPU, accelerate's auto placement is the CPU: load there directly


def check_runtime(config: LoRAConfig, device: str) -> None:
    """Raise :class:`UsageError` for options this machine cannot honour (checked when the step
    runs, not by a dry run: the workflow may be meant for another machine)."""
    if device == "cuda":
        return
    needs_gpu = []
    if config.device_map == "current_device":
        needs_gpu.append("device_map: current_device puts the model on the current CUDA device; "
                         "use auto or null")
    if config.ephemeral_gpu_offload:
        needs_gpu.append("ephemeral_gpu_offload: true offloads DoRA's initialization to a CUDA "
                         "device; set it to false")
    if config.torch_dtype == "float16":
        needs_gpu.append("torch_dtype: float16 trains in fp16 mixed precision, which needs a CUDA "
                         "device; use float32, bfloat16 or auto")
    if needs_gpu:
        raise UsageError(f"{'; '.join(needs_gpu)} (torch sees no CUDA GPU on this machine)")


def linear_layers(model: Any) -> dict[str, tuple[int, int]]:
    """``{module name: (in_features, out_features)}`` of every linear layer but the output head."""
    import torch

    out = {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            out[name] = (int(module.in_features), int(module.out_features))
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # GPT-2's linear layers
            out[name] = (int(module.weight.shape[0]), int(module.nf))
    return out


def default_lora_targets(handle: HfModel) -> list[str]:
    """Olive's LoRA targets when ``target_modules`` is not given: peft's default for the model
    type, else Olive's own (Phi-3), else a :class:`UsageError` asking for them."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    kind = model_type(handle)
    targets = PEFT_TARGETS.get(kind) or OLIVE_TARGETS.get(kind)
    if not targets:
        raise UsageError(f"target_modules: model type {kind or '(none in config.json)'!r} of "
                         f"{handle.path} has no default LoRA targets in peft or Olive; name them, "
                         "like [\"q_proj\", \"v_proj\"] or \"all-linear\"")
    return list(targets)


def quantized_targets(model: Any) -> list[str]:
    """Olive's QLoRA targets: the short names of every layer bitsandbytes made 4-bit."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if type(module).__name__ == "Linear4bit"})


def resolve_targets(config: LoRAConfig, handle: HfModel, layers: dict[str, tuple[int, int]],
                    variant_default: str | None = None) -> list[str] | str:
    """The target modules: the config's, else ``variant_default`` (LoHa and LoKr: all-linear, as
    Olive), else Olive's LoRA default (:func:`default_lora_targets`); checked against ``layers``."""
    targets = config.target_modules
    if targets is None and variant_default is not None:
        targets = variant_default
        if getattr(config, "layers_to_transform", None) is not None:
            # peft applies layers_to_transform to names, not to its all-linear expansion: name
            # every linear layer (but the head) by its short name so the layer filter applies
            targets = sorted({n.rsplit(".", 1)[-1] for n in layers})
    if targets is None:
        targets = default_lora_targets(handle)
    check_targets(targets, layers, handle.path)
    return targets


# -- data ------------------------------------------------------------------------------------
def tokenize(texts: list[str], tokenizer: Any, max_len: int, special_tokens: bool,
             join: bool = False) -> list[list[int]]:
    """Token ids of each text, EOS appended, cut to ``max_len`` (``join``: all texts in one
    stream cut into ``max_len`` blocks, Olive's ``join`` strategy)."""
    encoded = tokenizer(texts, add_special_tokens=special_tokens)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for ids in encoded:
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids if join else ids[:max_len])
    if join:
        stream = [i for ids in out for i in ids]
        out = [stream[i:i + max_len] for i in range(0, len(stream), max_len)]
        if len(out) > 1 and len(out[-1]) < max_len // 2:
            out.pop()  # a short tail would be a batch of padding
    return out


class TokenDataset:
    """A list of token id lists as a map-style dataset of ``{"input_ids": [...]}``."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.ids[index]}


class PadCollator:
    """Right-pads a batch; padding is masked out of the attention and the labels."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, :len(f["input_ids"])] = torch.tensor(f["input_ids"], dtype=torch.long)
            mask[i, :len(f["input_ids"])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def prepare_texts(config: LoRAConfig, context: Any, tokenizer: Any
                  ) -> tuple[list[str], list[str], TextOptions, str]:
    """Training and evaluation texts from the workflow's data configs; bad data raises UsageError."""
    train_dc = context.data_configs.get(config.train_data_config)
    if train_dc is None:
        raise UsageError(f"train_data_config: data config {config.train_data_config!r} is not "
                         "defined in the workflow")
    options = text_options(config, train_dc)
    chat = None
    if options.use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("use_chat_template: the base model's tokenizer has no chat template; "
                             "use text_template instead")

        def chat(messages: list[dict[str, str]]) -> str:
            return str(tokenizer.apply_chat_template(messages, tokenize=False))

    rows = load_rows(train_dc)
    texts = render_texts(rows, options, chat)
    seed = int(config.training_value("seed"))
    if config.eval_data_config:
        eval_dc = context.data_configs.get(config.eval_data_config)
        if eval_dc is None:
            raise UsageError(f"eval_data_config: data config {config.eval_data_config!r} is not "
                             "defined in the workflow")
        eval_texts = render_texts(load_rows(eval_dc), text_options(config, eval_dc), chat)
    else:
        texts, eval_texts = split_eval(texts, config.eval_dataset_size, seed)
    return texts, eval_texts, options, rows.source


# -- the Trainer -----------------------------------------------------------------------------
def _callback(context: Any, record: dict[str, Any]) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Reports each step to olivine and keeps the logged losses."""

        last_report = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            record["loop_started"] = time.perf_counter()
            record["tokens_at_start"] = int(state.num_input_tokens_seen or 0)
            context.progress(state.global_step, state.max_steps,
                             f"training from step {state.global_step}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            if now - self.last_report >= 0.25 or state.global_step >= state.max_steps:
                self.last_report = now
                loss = record["losses"][-1][1] if record["losses"] else None
                tail = f", loss {loss:.4f}" if loss is not None else ""
                context.progress(state.global_step, state.max_steps,
                                 f"step {state.global_step}/{state.max_steps}{tail}")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                record["losses"].append([int(state.global_step), float(logs["loss"])])
                context.logger.debug("step %d: loss %.4f", state.global_step, logs["loss"])
                context.progress(state.global_step, state.max_steps,
                                 f"step {state.global_step}/{state.max_steps}, "
                                 f"loss {float(logs['loss']):.4f}")

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            context.logger.debug("checkpoint at step %d", state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            record["loop_seconds"] = time.perf_counter() - record.pop("loop_started")
            record["tokens_this_run"] = int(state.num_input_tokens_seen or 0) - \
                record.pop("tokens_at_start")

    return Progress()


def total_steps(config: LoRAConfig, rows: int) -> int:
    """Optimizer steps the run will take (transformers' count: whole accumulated batches per
    epoch, at least one, times the epochs rounded up)."""
    max_steps = config.training_value("max_steps")
    if max_steps:
        return int(max_steps)
    batches = math.ceil(rows / int(config.training_value("per_device_train_batch_size")))
    per_epoch = max(1, batches // int(config.training_value("gradient_accumulation_steps")))
    return max(1, math.ceil(per_epoch * float(config.training_value("num_train_epochs"))))


#: The TrainingArguments fields ``olivine_training.json`` records as the run's effective
#: ``training_args`` (Olive's defaults unless the workflow set them).
RECORDED_ARGS = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
                 "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "optim", "gradient_checkpointing",
                 "activation_checkpointing", "group_by_length", "train_sampling_strategy",
                 "seed", "logging_steps", "save_strategy", "save_steps", "save_total_limit",
                 "eval_strategy", "eval_steps", "weight_decay", "max_grad_norm", "fp16", "bf16")


def effective_args(args: Any) -> dict[str, Any]:
    """The recorded fields of a TrainingArguments, as JSON values."""
    out: dict[str, Any] = {}
    for name in RECORDED_ARGS:
        if hasattr(args, name):
            value = getattr(args, name)
            out[name] = value if isinstance(value, bool | int | float | str | type(None)) \
                else str(getattr(value, "value", value))
    return out


def training_arguments(config: LoRAConfig, checkpoints: Path, device: str, dtype: Any,
                       steps: int, has_eval: bool) -> Any:
    """The TrainingArguments of a run: Olive's defaults (``HFTrainingArguments`` over
    transformers'), the config's options, then its extra ``training_args``."""
    import dataclasses

    import torch
    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    value = config.training_value
    max_steps = value("max_steps")
    kwargs: dict[str, Any] = {
        "output_dir": str(checkpoints), "max_steps": int(max_steps) if max_steps else -1,
        "num_train_epochs": float(value("num_train_epochs")),
        "learning_rate": float(value("learning_rate")),
        "lr_scheduler_type": str(value("lr_scheduler_type")),
        "per_device_train_batch_size": int(value("per_device_train_batch_size")),
        "gradient_accumulation_steps": int(value("gradient_accumulation_steps")),
        "seed": int(value("seed")), "logging_steps": int(value("logging_steps")),
        "save_strategy": "steps", "save_steps": int(value("save_steps")),
        "eval_strategy": "no", "report_to": [], "disable_tqdm": True,
        "use_cpu": device == "cpu", "dataloader_num_workers": 0, "remove_unused_columns": False,
        "include_num_input_tokens_seen": "non_padding",
        "fp16": device == "cuda" and dtype == torch.float16,  # Olive: float16 is mixed precision
        **(QLORA_TRAINING_DEFAULTS if isinstance(config, QLoRAConfig) else EXTRA_TRAINING_DEFAULTS),
    }
    warmup = float(value("warmup_ratio") or 0.0)
    if "warmup_ratio" in known:
        kwargs["warmup_ratio"] = warmup
    else:  # transformers 5: a warmup_steps below 1 is a ratio
        kwargs["warmup_steps"] = warmup
    # transformers 5 renamed gradient_checkpointing
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in known else \
        "gradient_checkpointing"
    kwargs[checkpointing] = bool(value("gradient_checkpointing"))
    extra = config.extra_training_args()
    if "group_by_length" in extra and "group_by_length" not in known and \
            extra.pop("group_by_length"):  # transformers 5's name for it
        extra.setdefault("train_sampling_strategy", "group_by_length")
    if extra:
        unknown = sorted(set(extra) - known)
        if unknown:
            from olivine import did_you_mean

            raise UsageError(f"training_args.{unknown[0]}: not a transformers TrainingArguments "
                             f"option{did_you_mean(unknown[0], known)}")
        kwargs.update(extra)
    if not has_eval:  # Olive's rule: no evaluation without evaluation data
        for key in ("eval_strategy", "eval_steps", "load_best_model_at_end"):
            kwargs.pop(key, None)
    elif kwargs.get("eval_strategy") in (None, "no"):  # Olive: "steps" unless told "epoch"
        kwargs["eval_strategy"] = "steps"
    return TrainingArguments(**kwargs)


def _quantization(config: QLoRAConfig, device: str) -> Any:
    from transformers import BitsAndBytesConfig

    compute = config.compute_dtype or config.torch_dtype
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(compute, device))


def train_adapter(handle: HfModel, config: LoRAConfig, context: Any) -> AdapterModel:
    """Train the adapter ``config`` asks for (LoRA, QLoRA, DoRA, LoHa, LoKr); return its handle."""
    import torch
    import transformers
    from peft import get_peft_model

    from olivine_lora.variants import default_targets, method_of, peft_config

    if handle.adapter_path:
        raise UsageError(f"the input model already has an adapter ({handle.adapter_path}); merge it "
                         "first (MergeAdapterWeights) to train a new one on top")
    started = time.perf_counter()
    transformers.logging.set_verbosity_warning()
    qlora = isinstance(config, QLoRAConfig)
    device = training_device()
    check_runtime(config, device)
    if qlora:
        from olivine_lora.qlora import check_backend

        check_backend(device)
    context.progress(0, None, "reading the data")
    tokenizer = load_tokenizer(handle)
    texts, eval_texts, options, source = prepare_texts(config, context, tokenizer)
    dtype = torch_dtype(config.torch_dtype, device)
    context.progress(0, None, f"loading {Path(handle.path).name}" + (" in 4 bits" if qlora else ""))
    quantization = _quantization(config, device) if isinstance(config, QLoRAConfig) else None
    model = load_model(handle, torch.float32 if dtype == torch.float16 else dtype, quantization,
                       device, resolve_device_map(config.device_map, device))
    layers = linear_layers(model)
    if qlora:  # Olive's rule: every layer bitsandbytes quantized
        targets: list[str] | str = quantized_targets(model)
        check_targets(targets, layers, handle.path)
    else:
        targets = resolve_targets(config, handle, layers, default_targets(config))
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(config.training_value("gradient_checkpointing")))
    elif config.training_value("gradient_checkpointing"):
        model.enable_input_require_grads()
    seed = int(config.training_value("seed"))
    transformers.set_seed(seed)
    try:
        model = get_peft_model(model, peft_config(config, targets, device))
    except ValueError as exc:  # e.g. exclude_modules or layers_to_transform leave nothing
        raise UsageError(f"{method_of(config)}: peft cannot adapt {handle.path} with these "
                         f"options: {exc}") from None
    special = not options.use_chat_template
    join = options.strategy == "join"
    train_ids = tokenize(texts, tokenizer, options.max_seq_len, special, join)
    eval_ids = tokenize(eval_texts, tokenizer, options.max_seq_len, special, join) \
        if eval_texts else []
    about = {"method": method_of(config), "base_model": handle.path, "data": source,
             "max_seq_len": options.max_seq_len, "strategy": options.strategy,
             "target_modules": targets, "device": device, "dtype": str(dtype).replace("torch.", "")}
    if isinstance(config, QLoRAConfig):
        about.update(base_bits=4, quant_type=config.quant_type, double_quant=config.double_quant,
                     compute_dtype=str(getattr(quantization, "bnb_4bit_compute_dtype", ""))
                     .replace("torch.", ""))
    run = Prepared(handle, model, tokenizer, train_ids, eval_ids, total_steps(config, len(train_ids)),
                   about, device, dtype, started)
    state = state_dir_for(context)
    try:
        return _train(config, context, run, state.path)
    finally:
        if not state.persistent:
            state.cleanup()


@attrs.frozen
class Prepared:
    """A run ready to train: the peft model, its tokenized data and what the record says."""

    base: HfModel
    model: Any
    tokenizer: Any
    train_ids: list[list[int]]
    eval_ids: list[list[int]]
    steps: int
    about: dict[str, Any]
    device: str
    dtype: Any
    started: float


def _train(config: LoRAConfig, context: Any, run: Prepared, state: Path) -> AdapterModel:
    """Run the Trainer (resuming from ``state``), evaluate, save; return the adapter handle."""
    import shutil

    import torch
    import transformers
    from transformers import PrinterCallback, ProgressCallback, Trainer

    model, steps, eval_ids = run.model, run.steps, run.eval_ids
    trainable, total = model.get_nb_trainable_parameters()
    checkpoints = state / "checkpoints"
    resume_from = last_complete_checkpoint(checkpoints) if config.resume else None
    if not config.resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
    record: dict[str, Any] = {"losses": []}
    args = training_arguments(config, checkpoints, run.device, run.dtype, steps, bool(eval_ids))
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(run.train_ids),
                      eval_dataset=TokenDataset(eval_ids) if eval_ids else None,
                      data_collator=PadCollator(int(run.tokenizer.pad_token_id)),
                      callbacks=[_callback(context, record)])
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    if resume_from is not None:
        context.logger.info("resuming from %s", resume_from)
        context.progress(0, steps, f"resuming from {resume_from.name}")
    cpu = time.process_time()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    if run.device == "cuda":  # Olive's allow_tf32; CPUs have no TF32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = config.allow_tf32
    try:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    steps = int(trainer.state.max_steps or steps)
    cpu = time.process_time() - cpu
    metrics: dict[str, Any] = {}
    if eval_ids:
        context.progress(steps, steps, "evaluating")
        metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])
        with model.disable_adapter():
            metrics["eval_loss_base"] = float(trainer.evaluate()["eval_loss"])
        for key in ("eval_loss", "eval_loss_base"):
            metrics[key.replace("eval_loss", "eval_perplexity")] = math.exp(min(metrics[key], 50))
    adapter_dir = context.work_dir / ADAPTER_DIR
    model.save_pretrained(str(adapter_dir), save_embedding_layers=False)  # as Olive saves it
    losses = record["losses"]
    loop = record.get("loop_seconds") or float(output.metrics.get("train_runtime", 0.0))
    tokens = int(record.get("tokens_this_run", 0))
    summary = {
        **run.about, "train_rows": len(run.train_ids), "eval_rows": len(eval_ids),
        "lora_r": config.lora_r, "lora_alpha": config.lora_alpha,
        "trainable_parameters": int(trainable), "parameters": int(total),
        "steps": int(trainer.state.global_step), "epochs": float(trainer.state.epoch or 0.0),
        "resumed_from_step": int(resume_from.name.rsplit("-", 1)[1]) if resume_from else None,
        "losses": losses, "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None,
        "tokens_this_run": tokens, "train_loop_seconds": round(loop, 3),
        "train_runtime": float(output.metrics.get("train_runtime", 0.0)),
        "train_cpu_seconds": round(cpu, 3),
        "tokens_per_second": round(tokens / loop, 1) if loop else None,
        "total_seconds": round(time.perf_counter() - run.started, 3), **metrics,
        "training_args": effective_args(args),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    (context.work_dir / TRAINING_RECORD).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(checkpoints, ignore_errors=True)
    context.progress(steps, steps, "done")
    peft_type = str(getattr(model.peft_config.get("default"), "peft_type", "LORA"))
    attributes = {"peft_type": peft_type.rsplit(".", 1)[-1], "method": run.about["method"],
                  "lora_r": config.lora_r, "lora_alpha": config.lora_alpha, "adapter_dir": ADAPTER_DIR,
                  "target_modules": run.about["target_modules"], "steps": summary["steps"],
                  **({"eval_perplexity": metrics["eval_perplexity"]} if metrics else {})}
    return AdapterModel(path=str(context.work_dir), base=run.base, attributes=attributes)
