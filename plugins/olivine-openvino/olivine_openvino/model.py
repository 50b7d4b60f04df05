"""The OpenVINO IR model kind: a folder holding one ``.xml`` graph and its ``.bin`` weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine import ConfigError, ModelHandle

#: subfolders optimum-intel writes next to the model (tokenizer models), not part of its graph
TOKENIZER_DIRS = ("openvino_tokenizer", "openvino_detokenizer")


def ir_problem(folder: Path) -> str | None:
    """Why ``folder`` is not an OpenVINO IR folder (exactly one .xml and one .bin), or None."""
    if not folder.is_dir():
        return f"no such folder {str(folder)!r}"
    xml = sorted(folder.glob("*.xml"))
    binf = sorted(folder.glob("*.bin"))
    if not xml or not binf:
        return f"{folder} holds no OpenVINO IR (expected one .xml file and its .bin weights)"
    if len(xml) > 1 or len(binf) > 1:
        return (f"{folder} holds {len(xml)} .xml and {len(binf)} .bin files; an OpenVINO model "
                "folder holds exactly one of each")
    return None


@attrs.frozen
class OpenVINOModel(ModelHandle):
    """An OpenVINO IR model (Olive's ``OpenVINOModel``): ``path`` is a folder with one
    ``<name>.xml`` and its ``<name>.bin``; json/txt files and tokenizer subfolders may sit
    next to them (optimum-intel's genai layout)."""

    kind: ClassVar[str] = "openvino"
    input_types: ClassVar[tuple[str, ...]] = ("OpenVINOModel",)

    @classmethod
    def from_input_config(cls, config: dict[str, Any], base_dir: Path) -> OpenVINOModel:
        """Read Olive's ``{"type": "OpenVINOModel", "model_path": ..., "model_attributes": ...}``."""
        known = {"model_path", "model_attributes"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"input_model.{unknown[0]}: unknown key; OpenVINOModel takes "
                              "model_path and model_attributes")
        raw = config.get("model_path")
        if not isinstance(raw, str) or not raw:
            raise ConfigError("input_model.model_path: required, a folder holding the model's "
                              ".xml and .bin files")
        folder = (base_dir / raw).expanduser().resolve()
        problem = ir_problem(folder)
        if problem:
            raise ConfigError(f"input_model.model_path: {problem}")
        attributes = config.get("model_attributes") or {}
        if not isinstance(attributes, dict):
            raise ConfigError("input_model.model_attributes: expected an object")
        return cls(path=str(folder), attributes=attributes)

    @property
    def xml_file(self) -> Path:
        """The model's ``.xml`` graph."""
        return next(Path(self.path).glob("*.xml"))

    @property
    def model_name(self) -> str:
        """The file stem of the ``.xml`` (Olive's ``model_config["model_name"]``)."""
        return self.xml_file.stem

    def make_runner(self, user_config: Any = None) -> Any:
        """A runner of this IR on the OpenVINO runtime (what the evaluators' metrics time and
        score); ``user_config`` may set ``ov_device`` and ``inference_num_threads``."""
        from olivine_openvino.runner import OpenVINORunner

        return OpenVINORunner(self.xml_file, user_config)
