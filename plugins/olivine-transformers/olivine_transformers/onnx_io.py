"""Reading and writing ONNX model folders the way every pass of this plugin does.

An ONNX model folder holds ``model.onnx`` (plus external data for models over 2 GB)
and *sidecar* files: the tokenizer and ``config.json`` that ``OnnxConversion``
copies from the Hugging Face model, so that later passes and evaluators can
tokenize text for the model without going back to the original checkpoint.
``onnx`` is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from olivine import ModelHandle, OnnxModel
from olivine.onnxsave import plain_data

#: Models whose serialized size is above this are saved with external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

#: Files a Hugging Face checkpoint folder holds that tokenizers and configs need.
SIDECAR_NAMES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model", "added_tokens.json",
)


def model_file(model: ModelHandle) -> Path:
    """The ``.onnx`` file of an ONNX model handle."""
    if not isinstance(model, OnnxModel):
        raise TypeError(f"expected an ONNX model, got a {model.kind} model")
    return model.model_file()


def load_proto(model: ModelHandle, load_external_data: bool = True) -> Any:
    """The model's ``onnx.ModelProto`` (with its external data by default)."""
    import onnx

    return onnx.load(str(model_file(model)), load_external_data=load_external_data)


def save_proto(proto: Any, folder: Path, file_name: str = "model.onnx",
               external: bool = False) -> Path:
    """Save ``proto`` into ``folder``; external data (one file) when asked or the model is large."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    if external:
        onnx.save_model(proto, str(target), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=file_name + ".data",
                        size_threshold=0)
        return target
    large = proto.ByteSize() > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(proto, str(target), save_as_external_data=large,
                    all_tensors_to_one_file=True, location=file_name + ".data")
    return target


def external_data_names(path: Path) -> set[str]:
    """Names of the external-data files that the model at ``path`` refers to."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    proto = onnx.load(str(path), load_external_data=False)
    return {ExternalDataInfo(t).location for t in _get_all_tensors(proto)
            if t.data_location == onnx.TensorProto.EXTERNAL}


def copy_sidecar_files(model: ModelHandle, dest: Path) -> list[str]:
    """Copy the tokenizer/config files beside ``model`` into ``dest``; return their names.

    Everything in the model's folder except ``.onnx`` files and the model's external
    data is copied, so tokenizers of any kind travel along the pass chain.
    """
    src = Path(model.path)
    if not src.is_dir():
        return []
    skip: set[str] = set()
    with contextlib.suppress(OSError, TypeError):
        skip = external_data_names(model_file(model))
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.suffix == ".onnx" or f.name in skip or f.name in ("run.json",
                                                                                  "summary.txt"):
            continue
        shutil.copy2(f, dest / f.name)
        copied.append(f.name)
    return copied


def copy_hf_sidecar_files(hf_folder: Path, dest: Path) -> list[str]:
    """Copy tokenizer and config files of a local Hugging Face folder into ``dest``."""
    copied = []
    for name in SIDECAR_NAMES:
        f = hf_folder / name
        if f.is_file():
            shutil.copy2(f, dest / name)
            copied.append(name)
    return copied


def model_facts(model: ModelHandle) -> dict[str, Any]:
    """``model_type``, ``num_attention_heads``, ``hidden_size``: from the handle's attributes,
    else from the ``config.json`` beside the model (an ONNX folder given as workflow input)."""
    facts: dict[str, Any] = {}
    folder = Path(model.path)
    cfg_file = (folder.parent if folder.is_file() else folder) / "config.json"
    if cfg_file.is_file():
        import json

        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError:
            cfg = {}
        for key, names in (("model_type", ("model_type",)),
                           ("num_attention_heads", ("num_attention_heads", "n_head")),
                           ("hidden_size", ("hidden_size", "n_embd", "d_model"))):
            value = next((cfg[n] for n in names if cfg.get(n) is not None), None)
            if value is not None:
                facts[key] = value
    attrs = model.attrs_dict()
    for key in ("model_type", "num_attention_heads", "hidden_size"):
        if attrs.get(key) is not None:
            facts[key] = attrs[key]
    return facts


def output_handle(source: ModelHandle, folder: Path, file_name: str = "model.onnx",
                  **attributes: Any) -> OnnxModel:
    """An ONNX handle for ``folder/file_name`` keeping ``source``'s attributes, updated."""
    merged = {**source.attrs_dict(), **attributes}
    return OnnxModel(path=str(folder), onnx_file_name=file_name, attributes=plain_data(merged))



def attribute_dict(model: ModelHandle, key: str) -> dict[str, Any]:
    """An attribute that was a dict when written (handles store it as pairs)."""
    value = model.attrs_dict().get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    try:
        return {k: v for k, v in value}
    except (TypeError, ValueError):
        return {}
