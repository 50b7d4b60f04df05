"""The ``diffusers`` model kind: a diffusers pipeline folder (or hub id), Olive's ``DiffusersModel``.

No torch or diffusers here: the variant is read from the components' ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine import ConfigError, ModelHandle, freeze_mapping

#: Olive's ``DiffusersModelVariant`` values (``auto`` detects from the pipeline's configs).
VARIANTS = ("auto", "sd", "sdxl", "sd3", "flux", "sana")
#: Variants the ``SDLoRA`` pass trains (Olive's pass trains these three too).
TRAINED_VARIANTS = ("sd", "sdxl", "flux")
#: Keys of Olive's ``DiffusersModel`` input model config.
INPUT_KEYS = ("model_path", "model_variant", "load_kwargs", "adapter_path", "model_attributes")


@attrs.frozen
class DiffusersModel(ModelHandle):
    """A diffusers pipeline: a local folder holding ``model_index.json``, or a hub id.

    ``model_variant`` is Olive's (``auto``, ``sd``, ``sdxl``, ``sd3``, ``flux``, ``sana``);
    ``adapter_path`` an optional LoRA adapter folder for it (``load_lora_weights``).
    """

    kind: ClassVar[str] = "diffusers"
    input_types: ClassVar[tuple[str, ...]] = ("DiffusersModel",)
    model_variant: str = "auto"
    load_kwargs: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=freeze_mapping)
    adapter_path: str | None = None

    def is_local(self) -> bool:
        """True when ``path`` is a folder on this machine (not a hub id)."""
        return Path(self.path).is_dir()

    def detected_variant(self) -> str | None:
        """``model_variant``, or for ``auto`` the variant the local configs show (else ``None``)."""
        if self.model_variant != "auto":
            return self.model_variant
        return detect_variant(Path(self.path)) if self.is_local() else None

    @classmethod
    def from_input_config(cls, config: dict[str, Any], base_dir: Path) -> DiffusersModel:
        """Read Olive's ``DiffusersModel`` input model (``model_path``, ``model_variant``, ...)."""
        unknown = sorted(set(config) - set(INPUT_KEYS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key; DiffusersModel takes "
                              f"{', '.join(INPUT_KEYS)}")
        raw = config.get("model_path")
        if not isinstance(raw, str) or not raw:
            raise ConfigError("model_path: required, a diffusers pipeline folder (with "
                              "model_index.json) or a hub id like org/name")
        variant = config.get("model_variant", "auto")
        if variant not in VARIANTS:
            raise ConfigError(f"model_variant: {variant!r} is not one of {', '.join(VARIANTS)}")
        load_kwargs = config.get("load_kwargs") or {}
        if not isinstance(load_kwargs, dict):
            raise ConfigError("load_kwargs: expected an object (keyword arguments of "
                              "DiffusionPipeline.from_pretrained)")
        path = pipeline_path(raw, base_dir, "model_path")
        adapter = config.get("adapter_path")
        if adapter is not None:
            folder = (base_dir / str(adapter)).expanduser().resolve()
            if not folder.exists():
                raise ConfigError(f"adapter_path: no such file or folder {adapter!r}")
            adapter = str(folder)
        return cls(path=path, model_variant=variant, load_kwargs=load_kwargs,
                   adapter_path=adapter, attributes=config.get("model_attributes") or {})


def pipeline_path(raw: str, base_dir: Path, what: str) -> str:
    """A local pipeline folder made absolute (it must hold model_index.json), or a hub id as is.

    Raises :class:`ConfigError` naming ``what``.
    """
    from olivine import HUB_ID

    folder = (base_dir / raw).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"{what}: {raw!r} has no model_index.json; give a diffusers "
                              "pipeline folder (DiffusionPipeline.save_pretrained's output) or a "
                              "hub id like org/name")
        return str(folder.resolve())
    if raw.startswith((".", "/", "~")) or raw.count("/") > 1 or not HUB_ID.match(raw):
        raise ConfigError(f"{what}: no such folder {raw!r} (and it is not a hub id like org/name)")
    return raw


def _config(folder: Path, sub: str) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / sub / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def detect_variant(folder: Path) -> str | None:
    """Olive's detection: the transformer's class name (Sana, Flux, SD3), else the UNet's
    ``cross_attention_dim`` (2048 and more: SDXL, else SD); ``None`` when neither is there.

    A UNet with SDXL's added time conditioning (``addition_embed_type: text_time``) is SDXL
    whatever its width (Olive would call a narrow one SD and fail on its missing inputs).
    """
    transformer = _config(folder, "transformer")
    if transformer is not None:
        name = str(transformer.get("_class_name", ""))
        for key, variant in (("Sana", "sana"), ("Flux", "flux"), ("SD3", "sd3")):
            if key in name:
                return variant
    unet = _config(folder, "unet")
    if unet is not None:
        if unet.get("addition_embed_type") == "text_time":
            return "sdxl"
        dim = unet.get("cross_attention_dim", 768)
        return "sdxl" if isinstance(dim, int) and dim >= 2048 else "sd"
    return None
