"""The passes: ``QuaRot`` and ``SliceGPT``, Hugging Face model in, Hugging Face model out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from olivine import HfModel, ModelHandle, Pass, PassContext, UsageError
from olivine_rotate.config import QuaRotConfig, SliceGPTConfig

#: files of a model folder that the passes write themselves
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
OWN_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def source_folder(model: HfModel, pass_name: str) -> Path:
    """The model's folder, downloading a hub id's files if needed."""
    if model.is_local():
        return Path(model.path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model.path, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]))
    except Exception as exc:  # offline, unknown repo, no access: all for the user to fix
        raise UsageError(f"{pass_name}: cannot fetch {model.path!r} from the Hugging Face hub: "
                         f"{exc}") from None


def check_input(model: ModelHandle, pass_name: str) -> HfModel:
    """The input as an :class:`HfModel`; :class:`UsageError` for other kinds or an adapter."""
    if not isinstance(model, HfModel):
        raise UsageError(f"{pass_name} takes Hugging Face models, got a {model.kind} model")
    if model.adapter_path:
        raise UsageError(f"{pass_name}: the model has a LoRA adapter ({model.adapter_path}); an "
                         "adapter trained on the unrotated weights does not fit the rotated model: "
                         "merge it into the model first")
    return model


def load(folder: Path, model: HfModel, pass_name: str, dtype: Any = "auto") -> Any:
    """The ``*ForCausalLM`` in ``folder``."""
    from transformers import AutoModelForCausalLM

    options = model.load_options()
    trust = bool(options.get("trust_remote_code", False))
    if dtype == "auto" and options.get("torch_dtype") not in (None, "auto"):
        dtype = options["torch_dtype"]
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, trust_remote_code=trust)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{pass_name}: cannot load {model.path} as a causal LM: {exc}") from None


def saved_dtype(folder: Path, model: HfModel) -> Any:
    """The torch dtype the checkpoint is stored in (or ``load_kwargs.torch_dtype``), else fp32."""
    import json

    import torch

    wanted = model.load_options().get("torch_dtype")
    if wanted in (None, "auto"):
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        wanted = raw.get("dtype") or raw.get("torch_dtype")
    value = getattr(torch, str(wanted).replace("torch.", ""), None) if wanted else None
    return value if isinstance(value, torch.dtype) and value.is_floating_point else torch.float32


def save(torch_model: Any, source: Path, target: Path) -> None:
    """``save_pretrained`` into ``target`` plus the source's tokenizer and other side files."""
    torch_model.save_pretrained(str(target), safe_serialization=True)
    for item in source.iterdir():
        if not item.is_file() or item.name in OWN_FILES or item.suffix in WEIGHTS:
            continue
        if not (target / item.name).exists():
            shutil.copy2(item, target / item.name)


def _local_config(model: ModelHandle | None) -> dict[str, Any]:
    """The input's ``config.json`` when it is a local folder (else, or unreadable, ``{}``)."""
    import json

    if not isinstance(model, HfModel) or not model.is_local():
        return {}
    try:
        raw = json.loads((Path(model.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # loading reports it with the loader's own words
    return raw if isinstance(raw, dict) else {}


def hadamard_problems(model: ModelHandle | None) -> list[str]:
    """Widths of a local input that no Hadamard matrix here fits (``rotate_mode`` hadamard)."""
    from olivine_rotate.hadamard import hadamard_order_problem

    raw = _local_config(model)
    hidden, heads = raw.get("hidden_size"), raw.get("num_attention_heads")
    head_dim = raw.get("head_dim") or (hidden // heads if isinstance(hidden, int)
                                       and isinstance(heads, int) and heads else None)
    out = []
    for n, what in ((hidden, "hidden size"), (head_dim, "head size")):
        problem = hadamard_order_problem(n) if isinstance(n, int) and n > 0 else None
        if problem:
            out.append(f"rotate_mode: the model's {what} is {n}: {problem}; use rotate_mode 'random'")
    return out


def model_problems(model: ModelHandle | None, pass_name: str) -> list[str]:
    """What the input's ``config.json`` already says cannot work (read only for local folders)."""
    from olivine_rotate.arch import LLAMA_LIKE

    kind = _local_config(model).get("model_type")
    if kind is None or kind in LLAMA_LIKE:
        return []
    if kind == "opt":
        return [f"the input model {getattr(model, 'path', '')} is an OPT (LayerNorm) model: "
                f"{pass_name} takes RMSNorm models ({', '.join(LLAMA_LIKE)})"
                + ("; OPT is not supported yet" if pass_name == "SliceGPT" else "")]
    return [f"the input model's type {kind!r} is not supported by {pass_name}; supported: "
            f"{', '.join(LLAMA_LIKE)}"]


def _result(model: HfModel, context: PassContext, facts: dict[str, Any]) -> HfModel:
    context.logger.info("%s", facts)
    return HfModel(path=str(context.work_dir), task=model.task, load_kwargs=model.load_kwargs,
                   attributes={**model.attrs_dict(), "rotation": facts})


class QuaRot(Pass):
    """QuaRot: fold the RMSNorm scales into the linears, then rotate the residual stream by a
    random Hadamard matrix (and each head's values by another), offline in the weights.

    The output computes the same function as the input (up to rounding) but has far fewer
    outlier channels, so weight quantization that follows (``Gptq``, ``Rtn``, ``ModelBuilder``
    int4) loses less. It is an ordinary checkpoint of the same architecture: unit norm
    scales, an untied LM head, no extra operators.
    """

    name: ClassVar[str] = "QuaRot"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = QuaRotConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Any, model: ModelHandle | None = None) -> list[str]:
        """Refuse, before running, an input model of an architecture QuaRot cannot rotate, or
        widths no Hadamard matrix fits."""
        problems = model_problems(model, cls.name)
        if not problems and config.rotate_mode == "hadamard":
            problems = hadamard_problems(model)
        return problems

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Load, rotate and save into ``context.work_dir``."""
        import torch

        from olivine_rotate.rotate import quarot

        hf = check_input(model, self.name)
        folder = source_folder(hf, self.name)
        context.progress(0, None, "loading")
        torch_model = load(folder, hf, self.name)
        with torch.no_grad():
            facts = quarot(torch_model, config.rotate_mode, config.seed,
                           lambda done, total: context.progress(done, total, "rotating layers"))
        context.progress(0, None, "saving")
        save(torch_model, folder, context.work_dir)
        return _result(hf, context, facts)


class SliceGPT(Pass):
    """SliceGPT: rotate the residual stream to its principal directions on calibration text and
    slice away the least used ones, shrinking the hidden size by ``sparsity``.

    Llama-shaped (RMSNorm) models; the output is an ordinary checkpoint of the same
    architecture with the smaller ``hidden_size`` (``head_dim`` is kept), which ModelBuilder
    and the ONNX exporters take as they take any other.
    """

    name: ClassVar[str] = "SliceGPT"
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = SliceGPTConfig
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    produces: ClassVar[str] = "hf"
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors")
    isolate: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Any, model: ModelHandle | None = None) -> list[str]:
        """Refuse, before running, an input model of an architecture SliceGPT cannot slice."""
        return model_problems(model, cls.name)

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Collect the stream's covariance, rotate, slice and save into ``context.work_dir``."""
        import torch

        from olivine_rotate.calibration import calibration_batches
        from olivine_rotate.rotate import new_hidden_size, prepare, residual_covariance, slice_model

        hf = check_input(model, self.name)
        folder = source_folder(hf, self.name)
        batches = calibration_batches(config, context, hf, folder)
        dtype = saved_dtype(folder, hf)
        torch_model = load(folder, hf, self.name, dtype=torch.float32)
        hidden = int(torch_model.config.hidden_size)
        new_dim = new_hidden_size(hidden, config.sparsity, config.round_interval)
        if new_dim < 1:
            raise UsageError(f"sparsity: {config.sparsity} with round_interval "
                             f"{config.round_interval} leaves no hidden dimension of {hidden}")
        with torch.no_grad():
            decoder = prepare(torch_model, self.name)
            total = len(batches)
            cov = residual_covariance(decoder, batches,
                                      lambda i: context.progress(i, total, "collecting activations"))
            facts = slice_model(torch_model, decoder, cov, new_dim, config.final_orientation,
                                config.seed)
        before = sum(p.numel() for p in torch_model.parameters())
        torch_model.to(dtype)
        save(torch_model, folder, context.work_dir)
        facts.update(sparsity=config.sparsity, parameters=int(before),
                     calibration_samples=sum(int(b["input_ids"].shape[0]) for b in batches))
        return _result(hf, context, facts)
