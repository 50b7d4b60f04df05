"""ONNX Runtime sessions that honour a model's inference settings.

An ONNX model handle may carry Olive's ``inference_settings`` in its attributes (from
``input_model.inference_settings``, or written by ``OrtSessionParamsTuning``):
``execution_provider`` (names, or ``[name, options]`` pairs), ``provider_options`` (one
object per provider), ``session_options`` (``intra_op_num_threads``,
``inter_op_num_threads``, ``execution_mode`` 0/1, ``graph_optimization_level`` 0/1/2/99,
``extra_session_config``, ``enable_profiling``, ``log_severity_level``), ``io_bind`` and
``tuning_op_result``. Every session olivine makes for such a model goes through
:func:`create_session`, so what the user or the tuning chose is what gets measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from olivine.errors import UsageError
from olivine.models import ModelHandle, OnnxModel

__all__ = ["SESSION_OPTION_KEYS", "SETTINGS_KEYS", "create_session", "model_settings",
           "onnx_model_file", "session_options", "session_settings", "session_summary", "settings_problems"]

#: Keys of ``inference_settings`` and what each must be.
SETTINGS_KEYS = {
    "execution_provider": "a provider name or a list of names (or [name, options] pairs)",
    "provider_options": "a list of objects, one per execution provider",
    "session_options": "an object of ONNX Runtime session options",
    "io_bind": "true or false",
    "tuning_op_result": "a list of tuning results (ROCm tunable ops)",
}
#: Keys of ``inference_settings.session_options``.
SESSION_OPTION_KEYS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                       "graph_optimization_level", "extra_session_config", "enable_profiling",
                       "log_severity_level")
_OPT_LEVELS = (0, 1, 2, 3, 99)
_NOT_HERE = {"provider_selection_policy": "Olive applies it only through ONNX Runtime's "
             "execution-provider device API (onnxruntime 1.22+ with plugin EPs), which olivine "
             "does not use; name the providers in execution_provider instead"}


def settings_problems(value: Any) -> list[tuple[str, str]]:
    """``(key, problem)`` for each wrong entry of an ``inference_settings`` object."""
    from olivine.errors import did_you_mean

    if not isinstance(value, Mapping):
        return [("", f"expected an object, got {type(value).__name__}")]
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        if key in _NOT_HERE:
            out.append((key, f"cannot apply here: {_NOT_HERE[key]}"))
        elif key not in SETTINGS_KEYS:
            out.append((key, f"unknown key{did_you_mean(str(key), list(SETTINGS_KEYS))}; "
                             f"expected one of {', '.join(SETTINGS_KEYS)}"))
        elif item is None:
            continue
        elif key != "session_options" and not _VALID[key](item):
            out.append((key, f"expected {SETTINGS_KEYS[key]}, got {item!r}"))
        elif key == "session_options":
            out.extend((f"session_options.{k}" if k else "session_options", m)
                       for k, m in _session_problems(item))
    providers = _providers(value.get("execution_provider"))
    options = value.get("provider_options")
    if providers and isinstance(options, list) and len(options) != len(providers[0]):
        out.append(("provider_options", f"gives {len(options)} object(s) for "
                                        f"{len(providers[0])} execution provider(s)"))
    return out


def _session_problems(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        return [("", f"expected an object, got {value!r}")]
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        if key not in SESSION_OPTION_KEYS:
            from olivine.errors import did_you_mean

            out.append((key, f"unknown session option{did_you_mean(str(key), SESSION_OPTION_KEYS)}"
                             f"; expected one of {', '.join(SESSION_OPTION_KEYS)}"))
        elif item is None:
            continue
        elif key in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level") and (
                not isinstance(item, int) or isinstance(item, bool) or item < 0):
            out.append((key, f"expected a non-negative integer, got {item!r}"))
        elif key == "execution_mode" and item not in (0, 1):
            out.append((key, f"expected 0 (sequential) or 1 (parallel), got {item!r}"))
        elif key == "graph_optimization_level" and (isinstance(item, bool)
                                                    or item not in _OPT_LEVELS):
            out.append((key, f"expected 0, 1, 2, 3 or 99 (disabled, basic, extended, layout, all), "
                             f"got {item!r}"))
        elif key == "extra_session_config" and not isinstance(item, Mapping):
            out.append((key, f"expected an object of config entries, got {item!r}"))
        elif key == "enable_profiling" and not isinstance(item, bool):
            out.append((key, f"expected true or false, got {item!r}"))
    return out


def _providers(value: Any) -> tuple[list[str], list[dict[str, Any] | None]] | None:
    """Names and inline options of an ``execution_provider`` value, or ``None`` if malformed."""
    if value is None:
        return [], []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return None
    names: list[str] = []
    inline: list[dict[str, Any] | None] = []
    for item in items:
        if isinstance(item, str):
            names.append(item)
            inline.append(None)
        elif (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], Mapping)):
            names.append(item[0])
            inline.append(dict(item[1]))
        else:
            return None
    return names, inline


_VALID = {
    "execution_provider": lambda v: _providers(v) is not None,
    "provider_options": lambda v: isinstance(v, list) and all(
        isinstance(o, Mapping | None) for o in v),
    "io_bind": lambda v: isinstance(v, bool),
    "tuning_op_result": lambda v: isinstance(v, list),
}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def model_settings(model: ModelHandle | None) -> dict[str, Any]:
    """The ``inference_settings`` a model handle carries (empty when none)."""
    if model is None:
        return {}
    return _plain(model.attrs_dict().get("inference_settings") or {})


def session_settings(model: ModelHandle | None, overrides: Mapping[str, Any] | None = None,
                     providers: Sequence[str] | None = None) -> dict[str, Any]:
    """The settings a session for ``model`` uses, as Olive merges them: each key of
    ``overrides`` (a metric's settings) replaces the model's; without an
    ``execution_provider`` the session runs on ``providers`` (the target accelerator's;
    default CPU)."""
    merged = model_settings(model)
    merged.update(_plain(dict(overrides or {})))
    problems = settings_problems(merged)
    if problems:
        raise UsageError("inference_settings: " + "; ".join(
            f"{k}: {m}" if k else m for k, m in problems))
    if not merged.get("execution_provider"):
        merged["execution_provider"] = list(providers or ["CPUExecutionProvider"])
        merged.pop("provider_options", None)
    names, inline = _providers(merged["execution_provider"]) or ([], [])
    given = merged.get("provider_options") or [None] * len(names)
    merged["execution_provider"] = names
    merged["provider_options"] = [
        {str(k): str(v) for k, v in (own if own is not None else opts or {}).items()}
        for own, opts in zip(inline, given, strict=True)]
    return merged


def session_options(settings: Mapping[str, Any], profile_prefix: Path | None = None) -> Any:
    """An ``onnxruntime.SessionOptions`` from ``settings["session_options"]``."""
    import onnxruntime as ort

    given = settings.get("session_options") or {}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if given.get("intra_op_num_threads"):
        options.intra_op_num_threads = int(given["intra_op_num_threads"])
    if given.get("inter_op_num_threads"):
        options.inter_op_num_threads = int(given["inter_op_num_threads"])
    if given.get("execution_mode") is not None:
        options.execution_mode = ort.ExecutionMode(int(given["execution_mode"]))
    if given.get("graph_optimization_level") is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel(
            int(given["graph_optimization_level"]))
    for key, value in (given.get("extra_session_config") or {}).items():
        options.add_session_config_entry(str(key), str(value))
    if given.get("log_severity_level") is not None:
        options.log_severity_level = int(given["log_severity_level"])
    if given.get("enable_profiling"):
        options.enable_profiling = True
        if profile_prefix is not None:
            options.profile_file_prefix = str(profile_prefix)
    return options


def onnx_model_file(model: OnnxModel | str | Path) -> Path:
    """The ``.onnx`` file of ``model``: a handle, a ``.onnx`` file or the folder holding it."""
    path = model.model_file() if isinstance(model, OnnxModel) else Path(model)
    if path.is_dir():
        path = OnnxModel(path=str(path)).model_file()
    if not path.is_file():
        raise UsageError(f"no ONNX model at {str(path)!r}")
    return path


def create_session(model: OnnxModel | str | Path, settings: Mapping[str, Any] | None = None,
                   profile_prefix: Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a handle, a ``.onnx`` file or its
    folder) with ``settings`` (default: :func:`session_settings` of the handle)."""
    import onnxruntime as ort

    handle = model if isinstance(model, OnnxModel) else None
    path = onnx_model_file(model)
    # settings from session_settings pass through unchanged; a plain settings object is
    # normalized the same way (providers default to CPU)
    resolved = session_settings(handle, None) if settings is None else session_settings(None, settings)
    providers = list(resolved["execution_provider"])
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise UsageError(f"execution provider {', '.join(missing)} is not available in this "
                         f"onnxruntime (available: {', '.join(available)})")
    session = ort.InferenceSession(str(path), session_options(resolved, profile_prefix),
                                   providers=providers,
                                   provider_options=list(resolved["provider_options"]))
    if resolved.get("tuning_op_result"):
        session.set_tuning_results(list(resolved["tuning_op_result"]))
    return session


def session_summary(session: Any) -> dict[str, Any]:
    """What a session actually runs with, read back from it (for logs and reports)."""
    opts = session.get_session_options()
    return {"providers": list(session.get_providers()),
            "intra_op_num_threads": opts.intra_op_num_threads,
            "inter_op_num_threads": opts.inter_op_num_threads,
            "execution_mode": int(opts.execution_mode),
            "graph_optimization_level": int(opts.graph_optimization_level)}
