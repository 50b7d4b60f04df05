"""A decoder-only transformers model held one decoder layer at a time.

The model is built on the meta device; embeddings, the final norm and then each
decoder layer in turn are filled from the safetensors files (memory-mapped), used and
dropped again. Peak memory is the embeddings plus one layer plus one layer's
calibration activations. Models this cannot do (no safetensors, decoder layers with
buffers of their own, names that differ from the checkpoint's) are loaded whole with
``from_pretrained`` instead; the rest of the code does not see the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from olivine import UsageError
from olivine_weightquant.hf_checkpoint import TensorSource, _restore_buffers, quant_config_of, read_config

log = logging.getLogger("olivine.pass.weightquant")


class DictSource:
    """A :class:`TensorSource` over an in-memory state dict."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self.state)

    def has(self, name: str) -> bool:
        """Whether ``name`` exists."""
        return name in self.state

    def get(self, name: str) -> torch.Tensor:
        """One tensor."""
        return self.state[name]

    def close(self) -> None:
        """Nothing to close."""


def compute_dtype(config: dict[str, Any]) -> torch.dtype:
    """bf16 models run in bf16 (fast on CPUs with AVX512-BF16); everything else in fp32."""
    inner = config.get("text_config")
    text: dict[str, Any] = inner if isinstance(inner, dict) else config
    name = str(text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype") or "float32")
    return torch.bfloat16 if "bfloat16" in name else torch.float32


class LayerwiseModel:
    """The model, its decoder layers, and where their weights come from."""

    def __init__(self, folder: Path, dtype: torch.dtype | None = None, lean: bool = True,
                 trust_remote_code: bool = False) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        self.folder = folder
        self.raw_config = read_config(folder)
        qc = quant_config_of(self.raw_config)
        if qc:
            raise UsageError(f"{folder} is already quantized ({qc.get('quant_method')}); calibrated "
                             "quantization needs the float model")
        self.dtype = dtype or compute_dtype(self.raw_config)
        self.config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        has_safetensors = any(folder.glob("*.safetensors"))
        self.lean = lean and has_safetensors
        if self.lean:
            with torch.device("meta"):
                self.model = AutoModelForCausalLM.from_config(self.config, dtype=self.dtype,
                                                              trust_remote_code=trust_remote_code)
            self.source: Any = TensorSource(folder)
            if not self._lean_ok():
                self.lean = False
        if not self.lean:
            log.info("loading %s whole (layer-by-layer loading does not apply to it)", folder)
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype,
                                                              trust_remote_code=trust_remote_code)
            self.source = DictSource(dict(self.model.state_dict()))
        self.model.eval()
        self.decoder = self.model.get_decoder()
        self.layers = self.decoder.layers
        self.prefix = self._layers_prefix()
        if self.lean:
            self._materialize_outside_layers()

    # -- structure -----------------------------------------------------------------------------

    def _layers_prefix(self) -> str:
        for name, module in self.model.named_modules():
            if module is self.layers:
                return name
        raise UsageError("cannot find the decoder layers of this model")

    @property
    def num_layers(self) -> int:
        """Decoder layers."""
        return len(self.layers)

    def layer_param_names(self, i: int) -> list[str]:
        """Checkpoint names of layer ``i``'s parameters."""
        return [f"{self.prefix}.{i}.{n}" for n, _ in self.layers[i].named_parameters()]

    def tied(self) -> bool:
        """Whether the LM head shares the embedding matrix."""
        text = getattr(self.config, "get_text_config", lambda: self.config)()
        return bool(getattr(text, "tie_word_embeddings", False))

    def lm_head_weight_name(self) -> str:
        """The checkpoint name that holds the LM head's matrix."""
        if self.source.has("lm_head.weight"):
            return "lm_head.weight"
        embed = self.model.get_input_embeddings()
        for name, module in self.model.named_modules():
            if module is embed:
                return f"{name}.weight"
        raise UsageError("cannot find the LM head's weights")

    def _lean_ok(self) -> bool:
        layers = self.model.get_decoder().layers
        if any(True for _ in layers[0].buffers()):
            log.debug("decoder layers own buffers: loading the model whole")
            return False
        names = set(self.source.names())
        wanted = set(self.model.state_dict())
        if self.tied():
            wanted = {n for n in wanted if not n.startswith("lm_head.")}
        missing = wanted - names
        if missing:
            log.debug("checkpoint names differ from the model's (%s...): loading the model whole",
                      sorted(missing)[:3])
            return False
        try:
            _restore_buffers(self.model, self.config)
        except ValueError as exc:
            log.debug("%s: loading the model whole", exc)
            return False
        return True

    def _materialize_outside_layers(self) -> None:
        state = {}
        for name, param in self.model.named_parameters():
            if name.startswith(self.prefix + ".") or not param.is_meta:
                continue
            if name.startswith("lm_head.") and self.tied():
                continue
            if name.startswith("lm_head."):
                continue  # not used by the calibration forward; read when needed
            state[name] = self.source.get(name).to(self.dtype)
        self.model.load_state_dict(state, strict=False, assign=True)

    # -- layers -------------------------------------------------------------------------------

    def load_layer(self, i: int) -> torch.nn.Module:
        """Decoder layer ``i`` with its weights in memory."""
        layer = self.layers[i]
        if self.lean:
            state = {n: self.source.get(f"{self.prefix}.{i}.{n}").to(self.dtype)
                     for n, _ in layer.named_parameters()}
            layer.load_state_dict(state, strict=True, assign=True)
        return layer

    def release_layer(self, i: int) -> None:
        """Drop layer ``i``'s weights (lean mode only)."""
        if self.lean:
            self.layers[i] = self.layers[i].to("meta")

    def final_norm(self) -> torch.nn.Module | None:
        """The norm applied after the last layer (``None`` if the model has none)."""
        return getattr(self.decoder, "norm", None)

    def lm_head_matrix(self) -> torch.Tensor:
        """``W[vocab, hidden]`` of the LM head (the embedding when tied)."""
        return self.source.get(self.lm_head_weight_name())

    def non_layer_names(self) -> Iterator[str]:
        """Checkpoint tensors outside the decoder layers."""
        for name in self.source.names():
            if not name.startswith(self.prefix + "."):
                yield name

    # -- calibration forward --------------------------------------------------------------------

    @torch.no_grad()
    def capture(self, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, list[dict[str, Any]]]]:
        """Layer-0 inputs and every layer's keyword arguments, per batch of token ids.

        The decoder runs with its layers replaced by recorders that return their input,
        so masks and rotary embeddings come from the model's own code.
        """
        records: list[dict[str, Any]] = [{} for _ in range(self.num_layers)]
        first: list[torch.Tensor] = []

        class Recorder(torch.nn.Module):
            def __init__(self, index: int) -> None:
                super().__init__()
                self.index = index

            def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
                if self.index == 0:
                    first.append(hidden)
                records[self.index] = dict(kwargs)
                return hidden

        real = self.decoder.layers
        self.decoder.layers = torch.nn.ModuleList([Recorder(i) for i in range(self.num_layers)])
        out = []
        try:
            for ids in batches:
                self.decoder(input_ids=ids, use_cache=False)
                out.append((first.pop(), [dict(r) for r in records]))
        finally:
            self.decoder.layers = real
        return out


def run_layer(layer: torch.nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """One decoder layer's output (layers return a tensor or a tuple starting with it)."""
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out
