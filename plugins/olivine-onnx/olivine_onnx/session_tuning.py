"""ONNX Runtime session tuning: the candidate settings, timing them, the ranked table, and
writing the fastest into the model.

:func:`tune_session_params` is the reusable core (a model file, inputs and candidate settings
in; ranked rows out); :func:`run_tuning` is the pass around it. Settings use Olive's
``inference_settings`` shape: ``execution_provider``, ``provider_options`` (lists, one entry
per provider), ``session_options`` and ``io_bind``.

The fastest settings are written three ways: the output handle's ``inference_settings``
attribute, ``inference_settings.json`` beside the model (read by :func:`create_session`), and
the model's ``ort_config`` metadata, which ONNX Runtime itself applies to every session when
``ORT_LOAD_CONFIG_FROM_MODEL=1``. For an onnxruntime-genai model (``genai_config.json`` naming
the tuned file) the thread counts and optimization level also go into its session options.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from olivine import ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine_onnx.session_pass import EXECUTION_MODES, OPT_LEVELS, SessionParamsTuningConfig, as_list

log = logging.getLogger("olivine.pass.session_tuning")

SETTINGS_FILE = "inference_settings.json"
TABLE_FILE = "session_params_tuning.md"
TABLE_JSON = "session_params_tuning.json"
_AFFINITIES = "session.intra_op_thread_affinities"


@attrs.define
class TuningRow:
    """One tried setting: its inference settings and what timing it gave (or why it failed)."""

    label: str
    settings: dict[str, Any]
    latency_ms: dict[str, float] = attrs.field(factory=dict)
    error: str | None = None
    #: ONNX Runtime's profile file, with ``enable_profiling``
    profile: str | None = None

    @property
    def avg(self) -> float:
        """Mean latency in ms (infinite when the setting failed)."""
        return self.latency_ms.get("avg", float("inf"))


def physical_cores() -> int:
    """The machine's physical cores (psutil's count when installed, else the logical count)."""
    try:
        import psutil
    except ImportError:
        return os.cpu_count() or 1
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def candidates(config: SessionParamsTuningConfig, providers: list[str],
               cores: int | None = None) -> list[TuningRow]:
    """The settings to try: ONNX Runtime's defaults per provider (``baseline``), then every
    combination of the given lists; duplicates dropped."""
    cores = config.cpu_cores or cores or physical_cores()
    rows: list[TuningRow] = []
    seen: set[str] = set()

    def add(label: str, settings: dict[str, Any]) -> None:
        key = json.dumps(settings, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(TuningRow(label, settings))

    extra = {str(k): str(v) for k, v in (config.extra_session_config or {}).items()}
    for provider in providers:
        add(f"baseline {provider}", {"execution_provider": [provider],
                                     "provider_options": [_provider_options(config, provider, {})],
                                     "session_options": {}, "io_bind": False})
    grid = itertools.product(providers, as_list(config.provider_options_list),
                             as_list(config.execution_mode_list), as_list(config.opt_level_list),
                             as_list(config.intra_thread_num_list),
                             as_list(config.inter_thread_num_list))
    for provider, options, mode, level, intra, inter in grid:
        session: dict[str, Any] = {}
        if mode is not None:
            session["execution_mode"] = mode
        if level is not None:
            session["graph_optimization_level"] = level
        if extra.get(_AFFINITIES):  # ORT wants one thread more than the affinities listed
            session["intra_op_num_threads"] = len(extra[_AFFINITIES].split(";")) + 1
        else:
            session["intra_op_num_threads"] = intra if intra is not None else cores
        if inter is not None:
            session["inter_op_num_threads"] = inter
        elif mode == 1:
            session["inter_op_num_threads"] = cores
        if extra:
            session["extra_session_config"] = extra
        if config.enable_profiling:
            session["enable_profiling"] = True
        add(_label(provider, session, config.io_bind),
            {"execution_provider": [provider],
             "provider_options": [_provider_options(config, provider, dict(options))],
             "session_options": session, "io_bind": bool(config.io_bind)})
    return rows


def _provider_options(config: SessionParamsTuningConfig, provider: str,
                      options: dict[str, Any]) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider" and config.trt_fp16_enable:
        options["trt_fp16_enable"] = True
    if provider == "CUDAExecutionProvider" and config.enable_cuda_graph:
        options["enable_cuda_graph"] = True
    return options


def _label(provider: str, session: dict[str, Any], io_bind: bool) -> str:
    parts = [provider]
    if "execution_mode" in session:
        parts.append(EXECUTION_MODES[session["execution_mode"]].lower().removeprefix("ort_"))
    if "graph_optimization_level" in session:
        parts.append("opt=" + OPT_LEVELS[session["graph_optimization_level"]]
                     .removeprefix("ORT_").lower())
    parts.append(f"intra={session.get('intra_op_num_threads', 'ort')}")
    if "inter_op_num_threads" in session:
        parts.append(f"inter={session['inter_op_num_threads']}")
    if io_bind:
        parts.append("io_bind")
    return " ".join(parts)


def session_options(settings: dict[str, Any], profile_prefix: Path | None = None) -> Any:
    """An ``onnxruntime.SessionOptions`` from ``settings["session_options"]`` (the host's
    :func:`olivine.ortsession.session_options`, which every evaluator session uses too)."""
    from olivine.ortsession import session_options as host_session_options

    return host_session_options(settings, profile_prefix)


def create_session(model_file: str | Path, settings: dict[str, Any] | None = None,
                   profile_prefix: Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` with ``settings`` (default: the
    ``inference_settings.json`` beside the model, written by ``OrtSessionParamsTuning``)."""
    import onnxruntime as ort

    model_file = Path(model_file)
    if settings is None:
        found = model_file.parent / SETTINGS_FILE
        settings = json.loads(found.read_text()) if found.is_file() else {}
    providers = settings.get("execution_provider") or ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise UsageError(f"execution provider {', '.join(missing)} is not available in this "
                         f"onnxruntime (available: {', '.join(available)})")
    options = settings.get("provider_options") or [{} for _ in providers]
    return ort.InferenceSession(str(model_file), session_options(settings, profile_prefix),
                                providers=list(providers), provider_options=list(options))


def _time(sess: Any, feeds: dict[str, np.ndarray], io_bind: bool, warmup: int,
          repeat: int) -> list[float]:
    if io_bind:
        binding = sess.io_binding()
        device = "cuda" if any("CUDA" in p or "Tensorrt" in p or "NvTensor" in p
                               for p in sess.get_providers()) else "cpu"
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for out in sess.get_outputs():
            binding.bind_output(out.name, device)

        def once() -> None:
            sess.run_with_iobinding(binding)
    else:
        def once() -> None:
            sess.run(None, feeds)
    for _ in range(warmup):
        once()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return times


def tune_session_params(model_file: str | Path, feeds: dict[str, np.ndarray],
                        rows: list[TuningRow], warmup: int = 10, repeat: int = 20,
                        profile_dir: Path | None = None) -> list[TuningRow]:
    """Time each row's settings on ``feeds``; the rows ranked fastest first (failed ones last,
    each with its error). The first timed row's settings are the best."""
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        try:
            sess = create_session(model_file, row.settings,
                                  profile_dir / f"setting{i}" if profile_dir else None)
            times = _time(sess, feeds, bool(row.settings.get("io_bind")), warmup, repeat)
            if row.settings["session_options"].get("enable_profiling"):
                row.profile = sess.end_profiling()
        except Exception as exc:  # one setting failing is a result, not the end of tuning
            row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            log.warning("setting %r failed: %s", row.label, row.error)
            continue
        ms = [t * 1000 for t in times]
        row.latency_ms.update({"avg": statistics.fmean(ms), "p50": statistics.median(ms),
                               "min": min(ms), "max": max(ms)})
    return sorted(rows, key=lambda r: r.avg)


def table(rows: list[TuningRow]) -> str:
    """The ranked rows as a Markdown table."""
    lines = ["| rank | setting | avg ms | p50 ms | min ms |", "|---:|---|---:|---:|---:|"]
    for i, row in enumerate(rows, 1):
        if row.error:
            lines.append(f"| - | {row.label} | failed: {row.error} | | |")
        else:
            ms = row.latency_ms
            lines.append(f"| {i} | {row.label} | {ms['avg']:.3f} | {ms['p50']:.3f} | "
                         f"{ms['min']:.3f} |")
    return "\n".join(lines)


def generated_feeds(sess: Any, seed: int = 0, head_size: int | None = None) -> dict[str, np.ndarray]:
    """Inputs for a session: symbolic dimensions 1 (a past sequence length 0, a KV cache's head
    dimension ``head_size``), floats random, integers zero, masks and total lengths one."""
    rng = np.random.default_rng(seed)
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    feeds: dict[str, np.ndarray] = {}
    for inp in sess.get_inputs():
        shape = []
        for i, d in enumerate(inp.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d.startswith("past_seq"):
                shape.append(0)
            elif head_size and inp.name.startswith("past_key_values") and i == len(inp.shape) - 1:
                shape.append(head_size)
            else:
                shape.append(1)
        dtype = types.get(inp.type)
        if dtype is None:
            raise UsageError(f"cannot generate input {inp.name!r} of type {inp.type}; give a "
                             "data_config")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in inp.name or dtype == np.bool_ or inp.name.startswith("total_seq"):
            feeds[inp.name] = np.ones(shape, dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype)
    return feeds


def _head_size(model_file: Path) -> int | None:
    cfg = model_file.parent / "genai_config.json"
    try:
        value = json.loads(cfg.read_text())["model"]["decoder"]["head_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(value) if isinstance(value, int) else None


def _data_feeds(model: OnnxModel, config: SessionParamsTuningConfig,
                context: PassContext) -> dict[str, np.ndarray] | None:
    if config.data_config is None:
        return None
    dc = context.data_configs.get(config.data_config)
    if dc is None:
        raise UsageError(f"data_config {config.data_config!r} is not defined in the workflow")
    try:
        from olivine_transformers.data import load_text_data
    except ImportError:
        raise UsageError("data_config needs the olivine-transformers plugin to load data: "
                         "pip install olivine-transformers") from None
    import onnx

    proto = onnx.load(str(model.model_file()), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    data = load_text_data(dc, model, max_samples=None)
    batch = next(iter(data.feeds(names)), None)
    if batch is None:
        raise UsageError(f"data config {config.data_config!r} gave no data")
    missing = [n for n in names if n not in batch]
    if missing:
        raise UsageError(f"data config {config.data_config!r} gives no {', '.join(missing)} "
                         f"for the model's inputs ({', '.join(names)})")
    types = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    feeds = {}
    for n in names:
        value = np.asarray(batch[n])
        if types.get(n) and value.dtype.kind in "fiub":  # numbers read from files: the model's type
            value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(types[n]))
        feeds[n] = value
    return feeds


def _copy_model(model: OnnxModel, dest: Path) -> Path:
    """The model's files copied into ``dest``; the copied ``.onnx`` file."""
    src = Path(model.path)
    if src.is_dir():
        for f in model.files():
            rel = f.relative_to(src)
            if rel.parts[0] in ("run.json", "summary.txt"):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / rel)
        return dest / model.model_file().relative_to(src)
    for f in model.files():
        shutil.copy2(f, dest / f.name)
    return dest / src.name


def run_tuning(model: ModelHandle, config: SessionParamsTuningConfig,
               context: PassContext) -> OnnxModel:
    """The pass: time the candidates, write the table and the fastest settings."""
    if not isinstance(model, OnnxModel):
        raise UsageError(f"OrtSessionParamsTuning takes ONNX models, got a {model.kind} model")
    rows = candidates(config, config.providers(context.accelerator))
    feeds = _data_feeds(model, config, context)
    if feeds is None:
        feeds = generated_feeds(create_session(model.model_file(), {}),
                                head_size=_head_size(model.model_file()))
    context.progress(0, len(rows), f"timing {len(rows)} settings")
    ranked = tune_session_params(model.model_file(), feeds, rows, config.warmup_num,
                                 config.repeat_test_num,
                                 context.work_dir / "profiles" if config.enable_profiling else None)
    text = table(ranked)
    context.logger.info("session settings, fastest first:\n%s", text)
    best = ranked[0]
    if best.error:
        raise OlivineError(f"every session setting failed; the first ({best.label}): "
                           f"{best.error}")
    out_file = _copy_model(model, context.work_dir)
    shapes = ", ".join(f"{k}[{', '.join(map(str, v.shape))}]" for k, v in feeds.items())
    (context.work_dir / TABLE_FILE).write_text(
        f"# OrtSessionParamsTuning\n\ntimed on {shapes}; {config.warmup_num} warm-up and "
        f"{config.repeat_test_num} timed runs per setting; written: **{best.label}**\n\n{text}\n")
    (context.work_dir / TABLE_JSON).write_text(json.dumps(
        [attrs.asdict(r) for r in ranked], indent=1, default=str))
    write_settings(out_file, best.settings)
    attributes = {**model.attrs_dict(), "inference_settings": best.settings}
    return OnnxModel(path=str(context.work_dir),
                     onnx_file_name=str(out_file.relative_to(context.work_dir)),
                     attributes=attributes)


def write_settings(model_file: Path, settings: dict[str, Any]) -> None:
    """``settings`` beside ``model_file``, in its ``ort_config`` metadata and, for a genai model,
    in ``genai_config.json``."""
    import onnx

    (model_file.parent / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    session = {k: v for k, v in (settings.get("session_options") or {}).items()
               if k in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                        "graph_optimization_level", "enable_profiling")}
    proto = onnx.load(str(model_file), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    meta["ort_config"] = json.dumps({"session_options": session})
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(model_file))  # external data stays where it is (not loaded)
    _write_genai(model_file, settings, session)


def _write_genai(model_file: Path, settings: dict[str, Any], session: dict[str, Any]) -> None:
    cfg_file = model_file.parent / "genai_config.json"
    if not cfg_file.is_file():
        return
    cfg = json.loads(cfg_file.read_text())
    written = []
    for name, part in (cfg.get("model") or {}).items():
        if not isinstance(part, dict) or part.get("filename") != model_file.name:
            continue
        opts = part.setdefault("session_options", {})
        for key in ("intra_op_num_threads", "inter_op_num_threads"):
            if key in session:
                opts[key] = session[key]
        if "graph_optimization_level" in session:
            opts["graph_optimization_level"] = OPT_LEVELS[session["graph_optimization_level"]]
        written.append(name)
    if written:
        cfg_file.write_text(json.dumps(cfg, indent=4))
        log.info("genai_config.json: session options of %s updated", ", ".join(written))
