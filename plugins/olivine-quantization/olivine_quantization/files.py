"""Small helpers for ONNX model folders (no heavy imports at module level)."""

from __future__ import annotations

import shutil
from pathlib import Path

from olivine.models import ModelHandle, OnnxModel


def model_size(model: ModelHandle) -> int:
    """Bytes of the model's files."""
    return sum(f.stat().st_size for f in model.files())


def copy_sidecar_files(model: ModelHandle, dest: Path) -> list[str]:
    """Copy tokenizer/config files beside the model into ``dest`` (not .onnx or its weights)."""
    src = Path(model.path)
    if not src.is_dir() or not isinstance(model, OnnxModel):
        return []
    from olivine.models import _external_data_files

    weights = {p.name for p in _external_data_files(model.model_file())}
    copied = []
    for f in sorted(src.iterdir()):
        if (not f.is_file() or f.suffix == ".onnx" or f.name in weights
                or f.name in ("run.json", "summary.txt")):
            continue
        shutil.copy2(f, dest / f.name)
        copied.append(f.name)
    return copied
