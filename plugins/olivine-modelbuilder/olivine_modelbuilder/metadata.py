"""``ModelBuilder`` with ``metadata_only``: genai_config.json for an existing ONNX decoder.

The input is an ONNX model folder that holds the transformers ``config.json`` (and the
tokenizer files) beside the model, as ``OnnxConversion`` with
``save_metadata_for_token_generation`` writes it. The builder runs with ``config_only``: it
reads that config and writes genai_config.json and the tokenizer files; the graph is not
rebuilt. Olive returns the input model with genai_config.json added to its
``additional_files``; olivine's output folder holds the model files (hard links where the
file system allows, else copies) and the new files together, so that
``onnxruntime_genai.Model`` loads it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from olivine import OnnxModel, PassContext, UsageError
from olivine_modelbuilder.build import build_model
from olivine_modelbuilder.config import ModelBuilderConfig, builder_options

#: Input names of a decoder that onnxruntime-genai feeds (past_key_values.* besides).
GENAI_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _link_or_copy(source: Path, dest: Path, link: bool) -> None:
    """Hard-link ``source`` (the weights: never written again) or copy it (files the builder
    may rewrite, which must not change the input model through a shared link)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass
    shutil.copy2(source, dest)


def write_metadata(model: OnnxModel, config: ModelBuilderConfig, provider: str,
                   context: PassContext, fallback: str | None) -> OnnxModel:
    """The ONNX ``model`` with genai_config.json and the tokenizer files, in ``context.work_dir``."""
    model_file = model.model_file()
    folder = model_file.parent
    if not (folder / "config.json").is_file():
        raise UsageError(f"metadata_only: {folder} has no config.json beside "
                         f"{model_file.name}; the model builder reads the transformers config "
                         "from there. Convert with OnnxConversion's "
                         "save_metadata_for_token_generation: true")
    check_decoder_io(model_file)
    from olivine import external_data_locations

    weights = {model_file.resolve(),
               *((folder / n).resolve() for n in external_data_locations(model_file))}
    out = context.work_dir
    for source in model.files():
        if source.is_file():
            _link_or_copy(source, out / source.relative_to(folder), source.resolve() in weights)
    options = {**builder_options(config), "config_only": True, "filename": model_file.name}
    context.progress(0, 1, "writing genai_config.json")
    build_model(str(out), out, precision=config.precision, provider=provider, options=options,
                local=True, search=config.search, progress=None, logger=context.logger)
    context.progress(1, 1, "done")
    attributes: dict[str, Any] = {**model.attrs_dict(), "is_generative": True,
                                  "genai_config": "genai_config.json",
                                  "precision": config.precision, "execution_provider": provider}
    # file names in the output folder (older handles may hold absolute paths)
    files = [Path(str(f)).name for f in attributes.get("additional_files") or ()]
    attributes["additional_files"] = [*dict.fromkeys([*files, "genai_config.json"])]
    if fallback:
        attributes["provider_fallback"] = fallback
    return OnnxModel(path=str(out), onnx_file_name=model_file.name, attributes=attributes)


def check_decoder_io(model_file: Path) -> None:
    """Refuse a model onnxruntime-genai could not drive as a decoder: no input_ids, or no
    present/past key-value cache (an export without ``io_config.kv_cache``)."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    missing = []
    if "input_ids" not in inputs:
        missing.append("an input_ids input")
    if "logits" not in outputs:
        missing.append("a logits output")
    if not any(n.startswith("past_key_values.") for n in inputs) or \
            not any(n.startswith("present.") for n in outputs):
        missing.append("past_key_values.<i>.key/value inputs and present.<i>.key/value outputs")
    if missing:
        raise UsageError(f"metadata_only: {model_file.name} has no {', no '.join(missing)}; "
                         "onnxruntime-genai runs decoders with a KV cache under those names "
                         "(inputs: " + ", ".join(inputs) + "). Export with OnnxConversion's "
                         "io_config.kv_cache: true (or task text-generation-with-past)")


def genai_config(folder: Path) -> dict[str, Any]:
    """The genai_config.json of ``folder`` as a dict."""
    data: dict[str, Any] = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    return data
