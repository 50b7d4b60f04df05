"""The hooks a plugin can implement.

A plugin is a module (or object) registered under the ``olivine`` entry-point
group whose functions carry the :data:`hookimpl` marker and are named after one
of the hooks below. Registration hooks receive a ``register`` callback; event
hooks are called by the engine as a run proceeds and return nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from olivine.events import RunInfo, StepInfo

hookspec = pluggy.HookspecMarker("olivine")
hookimpl = pluggy.HookimplMarker("olivine")


@hookspec
def register_passes(register: Callable[[type], None]) -> None:
    """Register optimization passes: call ``register(PassClass)`` once per pass.

    :param register: takes a subclass of :class:`olivine.Pass`; its ``name`` and
        ``aliases`` become the names that workflow configs use in ``type``.
    """


@hookspec
def register_evaluators(register: Callable[[type], None]) -> None:
    """Register evaluators: call ``register(EvaluatorClass)`` once per evaluator.

    :param register: takes a subclass of :class:`olivine.Evaluator`; each name in
        its ``metric_types`` becomes a metric ``type`` usable in ``evaluators``.
    """


@hookspec
def register_systems(register: Callable[[type], None]) -> None:
    """Register systems (where steps run): call ``register(SystemClass)``.

    :param register: takes a subclass of :class:`olivine.System`; its ``name``
        becomes a system ``type`` usable in ``systems``.
    """


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Register CLI sub-commands: ``register(name, help, configure, handler)``.

    :param register: ``configure(parser)`` adds arguments to an
        :class:`argparse.ArgumentParser`; ``handler(args) -> int`` runs the command
        and returns its exit code. Import heavy libraries inside ``handler`` only.
    """


@hookspec
def register_model_kinds(register: Callable[[type], None]) -> None:
    """Register model kinds: call ``register(HandleClass)`` once per kind.

    :param register: takes a frozen attrs subclass of :class:`olivine.ModelHandle` whose
        ``kind`` class variable is the kind's unique name (what passes put in ``accepts``
        and ``produces``). Handles are written to run records with ``to_dict`` and read
        back by kind, so fields must be JSON values or handles. A class that also reads a
        workflow's ``input_model`` lists Olive's ``type`` names in ``input_types`` and
        implements ``from_input_config(config, base_dir)``, returning a handle or raising
        :class:`olivine.ConfigError` with a message naming the bad key. The host's own
        kinds (``hf``, ``onnx``, ``pytorch``, ``adapter``, ``composite``) are registered
        through this hook too.
    """


@hookspec
def register_data_components(register: Callable[..., None]) -> None:
    """Register data components and containers: ``register(kind, obj, name=None)``.

    :param register: ``kind`` is ``load_dataset``, ``pre_process_data``,
        ``post_process_data``, ``dataloader`` (``obj`` a function, registered as ``name``
        or its ``__name__``) or ``data_container`` (``obj`` a
        :class:`olivine.data.DataContainerSpec`). Names are Olive's and
        case-insensitive; a name olivine or another plugin provides is an error. Import
        heavy libraries inside the functions only.
    """


@hookspec
def run_started(run: RunInfo) -> None:
    """Called once when a workflow run starts, before its first step.

    :param run: the run's id, planned steps, output and cache folders.
    """


@hookspec
def step_started(step: StepInfo) -> None:
    """Called when a step starts (also when its result comes from the cache).

    :param step: the step's index, name, pass, cache key and input model id.
    """


@hookspec
def step_progress(step: StepInfo, done: float, total: float | None, message: str) -> None:
    """Called as a pass reports progress through ``context.progress(...)``.

    :param step: the step that reports.
    :param done: units of work done so far.
    :param total: units of work in all, or ``None`` when unknown.
    :param message: a short description of what is happening now.
    """


@hookspec
def step_finished(step: StepInfo, record: dict[str, Any]) -> None:
    """Called when a step ends, whether it succeeded, failed or came from the cache.

    :param step: the step that ended.
    :param record: the step's entry in ``run.json`` (status, duration, peak memory,
        cache hit, output id, error).
    """


@hookspec
def run_finished(run: RunInfo, report: dict[str, Any]) -> None:
    """Called once when a run ends, successfully or not, after ``run.json`` is written.

    :param run: the run that ended.
    :param report: the full content of ``run.json``.
    """
