"""Publish the final model into ``output_dir`` atomically.

Everything is written into a staging folder beside ``output_dir`` and renamed
into place at the end, so ``output_dir`` never holds half a result. A folder
that exists and was not made by olivine is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from olivine.errors import UsageError
from olivine.models import CompositeModel, ModelHandle, OnnxModel

REPORT = "run.json"


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output folder that exists, is not empty and was not made by olivine."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output path {str(output_dir)!r} is a file; give a folder path")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not is_olivine_output(output_dir):
        raise UsageError(f"output folder {str(output_dir)!r} exists and was not made by olivine "
                         "(no run.json); choose another output path or empty it")


def is_olivine_output(folder: Path) -> bool:
    """True when ``folder`` holds a run.json written by olivine."""
    try:
        return "olivine_version" in json.loads((folder / REPORT).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _copy_model(model: ModelHandle, dest: Path) -> ModelHandle:
    """Copy ``model``'s files under ``dest``; return the handle pointing there."""
    if isinstance(model, CompositeModel):
        parts = tuple((name, _copy_model(h, dest / name)) for name, h in model.components)
        return CompositeModel(path=str(dest), components=parts, attributes=model.attributes)
    src = Path(model.path)
    if not src.exists():  # a hub id: nothing to copy
        return model
    if src.is_file():
        for f in model.files():
            _link_or_copy(f, dest / f.name)
        return model.rebased(src.parent, dest)
    for f in model.files():
        _link_or_copy(f, dest / f.relative_to(src))
    if isinstance(model, OnnxModel) and model.onnx_file_name is None:
        try:
            name = model.model_file().name
            return OnnxModel(path=str(dest), onnx_file_name=name, attributes=model.attributes)
        except FileNotFoundError:
            pass
    return model.rebased(src, dest)


def publish(output_dir: Path, model: ModelHandle, report: dict[str, Any],
            summary: str = "", extras: list[Path] | None = None) -> ModelHandle:
    """Write the model files and ``run.json`` into ``output_dir`` in one rename."""
    output_dir = output_dir.resolve()
    check_output_dir(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.olivine-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        staged = _copy_model(model, staging)
        final = staged.rebased(staging, output_dir)
        report = {**report, "output_model": final.to_dict(relative_to=output_dir),
                  "output_dir": str(output_dir)}
        (staging / REPORT).write_text(json.dumps(report, indent=2, default=str))
        if summary:
            (staging / "summary.txt").write_text(summary)
        for extra in extras or []:
            shutil.copy2(extra, staging / extra.name)
        old = None
        if output_dir.exists():
            old = output_dir.parent / f".{output_dir.name}.olivine-old-{os.getpid()}"
            os.rename(output_dir, old)
        os.rename(staging, output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
