"""Running a pass on each component of a composite model, as Olive does.

A pass that does not take ``composite`` models but gets one (the encoder and decoder that
``ModelBuilder`` makes of a Whisper model, the parts ``SplitModel`` makes) runs once per
component, and the outputs form a composite again (Olive's ``Pass.run``).

Olive saves every component's output under one folder: a component named like an ONNX
file (``encoder.onnx``, ``decoder.onnx``: the builder's names) is written back to that
folder itself, so onnxruntime-genai finds both files beside ``genai_config.json``; other
names (``split_0``) get a subfolder of that name. Here each component runs in a work
folder of its own, then an ONNX component named ``*.onnx`` has its model file, its
external data and the files beside it (tokenizer, genai_config.json; never another
component's ``.onnx`` or external data) moved up into the step's folder. Two components
whose model files would take the same name there are an error naming both.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import attrs

from olivine.errors import OlivineError, UsageError
from olivine.models import CompositeModel, ModelHandle, OnnxModel
from olivine.passes import PassContext
from olivine.safepath import component_problem

RunFn = Callable[[ModelHandle, PassContext], ModelHandle]


def runs_per_component(accepts: tuple[str, ...], model: ModelHandle) -> bool:
    """True when a pass taking ``accepts`` runs once per component of ``model``."""
    return isinstance(model, CompositeModel) and "composite" not in accepts


def run_per_component(run: RunFn, pass_name: str, accepts: tuple[str, ...], model: CompositeModel,
                      context: PassContext) -> CompositeModel:
    """Run ``run`` on each component of ``model`` (see the module's notes); the new composite."""
    work = context.work_dir
    if not model.components:
        raise UsageError(f"{pass_name}: the composite input model has no components")
    for name, component in model.components:
        if component.kind not in accepts:
            raise UsageError(f"{pass_name} takes {' or '.join(accepts)} models, but component "
                             f"{name!r} of the composite input is a {component.kind} model")
        problem = component_problem(name)
        if problem is not None:
            raise UsageError(f"{pass_name}: component name {name!r} {problem}")
    outputs: list[tuple[str, ModelHandle]] = []
    for i, (name, component) in enumerate(model.components):
        sub = work / (f".component-{i}" if _shares_folder(name) else name)
        sub.mkdir(parents=True, exist_ok=False)

        def progress(done: float, total: float | None = None, message: str = "",
                     _name: str = name) -> None:
            context.progress(done, total, f"{_name}: {message}" if message else _name)

        context.logger.info("%s: component %s (%d of %d)", pass_name, name, i + 1,
                            len(model.components))
        sub_context = attrs.evolve(context, work_dir=sub, progress_fn=progress)
        try:
            outputs.append((name, run(component, sub_context)))
        except OlivineError as exc:  # say which part failed (the type and exit code stay)
            exc.args = (f"component {name!r}: {exc}", *exc.args[1:])
            raise
    # names of model files and external data anywhere in play: never copied as side files
    folders = {Path(output.path) for _, output in outputs if isinstance(output, OnnxModel)}
    folders |= {Path(c.path) for _, c in model.components} | {Path(model.path)}
    models = _model_file_names(folders)
    parts: list[tuple[str, ModelHandle]] = []
    taken: dict[str, str] = {}
    for name, output in outputs:
        if _shares_folder(name) and isinstance(output, OnnxModel):
            parts.append((name, _move_up(output, work, name, taken, pass_name)))
        else:
            parts.append((name, output))
    for name, output in outputs:  # the files beside each model (tokenizer, genai_config.json)
        if _shares_folder(name) and isinstance(output, OnnxModel):
            _copy_beside(Path(output.path), work, models)
    _copy_beside(Path(model.path), work, models)
    for i, (name, _) in enumerate(model.components):
        if _shares_folder(name):
            shutil.rmtree(work / f".component-{i}", ignore_errors=True)
    return CompositeModel(path=str(work), components=tuple(parts), attributes=model.attrs_dict())


def _shares_folder(name: str) -> bool:
    """Olive's rule: a component named like an ONNX file is written into the shared folder."""
    return name.lower().endswith(".onnx")


def model_files(model_file: Path) -> list[Path]:
    """``model_file`` and its external-data files (those in its folder)."""
    from olivine.onnxfile import NotAnOnnxFile, external_data_locations

    try:
        names = external_data_locations(model_file)
    except (NotAnOnnxFile, OSError):
        names = []
    folder = model_file.parent
    return [model_file, *(folder / n for n in names if (folder / n).is_file())]


def _move_up(output: OnnxModel, work: Path, name: str, taken: dict[str, str],
             pass_name: str) -> OnnxModel:
    """Move (or copy, when it lies outside ``work``) the model file and its data into ``work``."""
    source = output.model_file()
    own = model_files(source)
    for f in own:
        rel = f.relative_to(source.parent).as_posix()
        if rel in taken:
            raise UsageError(f"{pass_name}: components {taken[rel]!r} and {name!r} both wrote "
                             f"{rel}; the composite's components share one folder, so their "
                             "files need different names")
        taken[rel] = name
    inside = source.parent.resolve().is_relative_to(work.resolve())
    for f in own:
        target = work / f.relative_to(source.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        if inside:
            shutil.move(str(f), target)
        else:
            shutil.copy2(f, target)
    return OnnxModel(path=str(work), onnx_file_name=source.name, attributes=output.attrs_dict())


def _model_file_names(folders: set[Path]) -> set[str]:
    """Names of the ``.onnx`` files in ``folders`` (or named by them) and of their external data."""
    names: set[str] = set()
    for folder in folders:
        if folder.is_file():
            folder = folder.parent
        if folder.is_dir():
            for onnx_file in folder.glob("*.onnx"):
                names.update(f.name for f in model_files(onnx_file))
    return names


def _copy_beside(folder: Path, work: Path, models: set[str]) -> None:
    """Copy the plain files of ``folder`` into ``work``: not ``.onnx`` files nor external data
    (``models``), and not names ``work`` already has."""
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir() or folder.resolve() == work.resolve():
        return
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name not in models and f.suffix != ".onnx" \
                and f.name not in ("run.json", "summary.txt") and not (work / f.name).exists():
            shutil.copy2(f, work / f.name)
