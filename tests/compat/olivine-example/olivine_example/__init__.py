"""An example olivine plugin: the ``OnnxMetadata`` pass.

This module is what the entry point names. It stays light: ``onnx`` is imported
inside :meth:`OnnxMetadata.run`, so ``olivine --help`` does not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

import olivine
from olivine import OnnxModel, Pass, PassContext

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _check_keys(instance: Any, attribute: Any, value: dict[str, str]) -> None:
    for key in value:
        if not _KEY.match(key):
            raise ValueError(f"metadata: key {key!r} must start with a letter or _ and hold only "
                             "letters, digits, '_', '.' and '-'")


@attrs.frozen
class MetadataConfig:
    """Options of ``OnnxMetadata``."""

    metadata: dict[str, str] = attrs.field(
        factory=dict, validator=_check_keys,
        metadata={"help": "key/value pairs written to metadata_props (existing keys are replaced)"})
    doc_string: str | None = attrs.field(default=None, metadata={"help": "the model's doc_string"})
    model_version: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)),
        metadata={"help": "the model's model_version (an integer >= 0)"})


class OnnxMetadata(Pass):
    """Write doc_string, model_version and metadata_props into an ONNX model."""

    name = "OnnxMetadata"
    aliases = ("onnx_metadata",)
    Config = MetadataConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx",)

    def run(self, model: Any, config: MetadataConfig, context: PassContext) -> OnnxModel:
        """Load the model with its external data, stamp it, save it into ``context.work_dir``."""
        import onnx

        source = model.model_file()
        context.progress(0, 3, f"loading {source.name}")
        proto = onnx.load(str(source), load_external_data=True)
        context.progress(1, 3, "writing metadata")
        if config.doc_string is not None:
            proto.doc_string = config.doc_string
        if config.model_version is not None:
            proto.model_version = config.model_version
        props = {p.key: p.value for p in proto.metadata_props}
        props.update(config.metadata)
        del proto.metadata_props[:]
        for key, value in sorted(props.items()):
            proto.metadata_props.add(key=key, value=value)
        target: Path = context.work_dir / source.name
        large = proto.ByteSize() > 1_000_000_000
        has_external = any(p.is_file() and p.suffix != ".onnx" for p in model.files())
        context.progress(2, 3, f"saving {target.name}")
        onnx.save_model(proto, str(target), save_as_external_data=large or has_external,
                        all_tensors_to_one_file=True, location=target.name + ".data")
        context.progress(3, 3, "done")
        return OnnxModel(path=str(context.work_dir), onnx_file_name=target.name)


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the example pass."""
    register(OnnxMetadata)
