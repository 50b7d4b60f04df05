"""Timing: latency and throughput of ONNX Runtime sessions and torch models."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from olivine import EvalContext, MetricConfig, ModelHandle, UsageError
from olivine_evaluators.runtime import Runner, data_batches, dummy_feeds, make_runner

DEFAULTS = {"warmup_num": 10, "repeat_test_num": 100, "sleep_num": 0.0, "batch_size": 1,
            "seq_len": 128}


def time_runs(fn: Callable[[], Any], warmup: int, repeat: int, sleep: float = 0.0) -> list[float]:
    """Call ``fn`` ``warmup`` times, then time ``repeat`` calls; return seconds per call."""
    if repeat < 1:
        raise UsageError(f"repeat_test_num: expected at least 1 timed run, got {repeat}")
    for _ in range(max(warmup, 0)):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sleep:
            time.sleep(sleep)
    return times


def stats_ms(times: list[float]) -> dict[str, float]:
    """avg, percentiles, min, max and std of ``times`` (seconds) in milliseconds."""
    ms = np.asarray(times) * 1000.0
    return {
        "avg": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
        "p75": float(np.percentile(ms, 75)), "p90": float(np.percentile(ms, 90)),
        "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99)),
        "p999": float(np.percentile(ms, 99.9)), "min": float(ms.min()), "max": float(ms.max()),
        "std": float(ms.std()),
    }


def throughput_stats(times: list[float], batch_size: int) -> dict[str, float]:
    """Samples per second of each run: mean and percentiles (p90 is the 90th-slowest-best)."""
    per_s = batch_size / np.asarray(times)
    return {
        "avg": float(batch_size * len(times) / float(np.sum(times))),
        # throughput's pNN is the throughput at the latency's pNN (a pessimistic figure)
        "p50": float(np.percentile(per_s, 50)), "p75": float(np.percentile(per_s, 25)),
        "p90": float(np.percentile(per_s, 10)), "p95": float(np.percentile(per_s, 5)),
        "p99": float(np.percentile(per_s, 1)), "p999": float(np.percentile(per_s, 0.1)),
        "min": float(per_s.min()), "max": float(per_s.max()),
    }


def options(user_config: Mapping[str, Any]) -> dict[str, Any]:
    """``user_config`` with the defaults filled in and numbers checked."""
    cfg = {**DEFAULTS, **dict(user_config)}
    for key in ("warmup_num", "repeat_test_num", "batch_size", "seq_len"):
        if not isinstance(cfg[key], int) or cfg[key] < 0 or (key != "warmup_num" and cfg[key] < 1):
            raise UsageError(f"user_config.{key}: expected a positive integer, got {cfg[key]!r}")
    return cfg


def timing_feeds(model: ModelHandle, runner: Runner, metric: MetricConfig | None,
                 context: EvalContext | None, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The first batch of the metric's data, or random inputs of the configured shape."""
    if metric is not None and context is not None and metric.data_config is not None:
        data = data_batches(model, metric, context, max_samples=int(cfg["batch_size"]))
        batch = data.batches[0]
        if batch and all(str(k).startswith("#") for k in batch):  # unnamed: Runner.run names them
            return dict(batch)
        return {k: v for k, v in batch.items() if k in runner.input_names}
    return dummy_feeds(runner, int(cfg["batch_size"]), int(cfg["seq_len"]))


def measure(model: ModelHandle, user_config: Mapping[str, Any], metric: MetricConfig | None = None,
            context: EvalContext | None = None) -> tuple[list[float], int]:
    """Time ``model``; return the seconds of each timed run and the batch size."""
    cfg = options(user_config)
    provider = context.accelerator.execution_provider if context is not None else \
        "CPUExecutionProvider"
    runner = make_runner(model, cfg, provider)
    feeds = timing_feeds(model, runner, metric, context, cfg)
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else int(cfg["batch_size"])
    times = time_runs(lambda: runner.run(feeds), int(cfg["warmup_num"]),
                      int(cfg["repeat_test_num"]), float(cfg["sleep_num"]))
    return times, batch


def latency_metric(model: ModelHandle, metric: MetricConfig, context: EvalContext,
                   subs: list[str]) -> dict[str, float]:
    """The ``latency`` metric: requested statistics in milliseconds."""
    times, _ = measure(model, metric.user_config, metric, context)
    values = stats_ms(times)
    return {s: values[s] for s in subs}


def throughput_metric(model: ModelHandle, metric: MetricConfig, context: EvalContext,
                      subs: list[str]) -> dict[str, float]:
    """The ``throughput`` metric: requested statistics in samples per second."""
    times, batch = measure(model, metric.user_config, metric, context)
    values = throughput_stats(times, batch)
    return {s: values[s] for s in subs}
