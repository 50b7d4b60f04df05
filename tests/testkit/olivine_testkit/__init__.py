"""Passes and an evaluator for testing the olivine engine with real ONNX files.

Every pass appends a line ``<pass> <step>`` to the file named by
``OLIVINE_TESTKIT_RUNS`` (when set), so tests can count real executions across
processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import attrs

import olivine
from olivine import Evaluator, MetricConfig, OnnxModel, Pass, PassContext, option


def _record(pass_name: str, context: PassContext) -> None:
    target = os.environ.get("OLIVINE_TESTKIT_RUNS")
    if target:
        with open(target, "a") as fh:
            fh.write(f"{pass_name} {context.step_name} {os.getpid()}\n")


def _copy_model(model: Any, context: PassContext) -> OnnxModel:
    src = Path(model.path)
    files = model.files()
    base = src if src.is_dir() else src.parent
    for f in files:
        dest = context.work_dir / f.relative_to(base)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    return OnnxModel(path=str(context.work_dir), onnx_file_name=model.model_file().name)


@attrs.frozen
class ScaleConfig:
    """Options of ``Scale``."""

    factor: float = attrs.field(default=2.0, validator=attrs.validators.gt(0),
                                metadata=option(help="multiply every float initializer by this"))
    note: str = attrs.field(default="", metadata=option(help="free text (changes the cache key)"),
                            )
    pad: int = attrs.field(default=0, metadata=option(help="write factor*pad bytes of padding",
                                                search=(0, 1000)))
    fail_above: float | None = attrs.field(default=None, metadata=option(help="fail if factor is larger"))


class Scale(Pass):
    """Multiply every float initializer of an ONNX model by ``factor``."""

    name = "Scale"
    Config = ScaleConfig
    libraries = ("onnx", "numpy", "olivine-testkit-dep")
    preload = ("olivine_testkit.preload_probe",)

    def run(self, model: Any, config: ScaleConfig, context: PassContext) -> OnnxModel:
        """Scale the weights and save the model with external data."""
        import numpy as np
        import onnx
        from onnx import numpy_helper

        _record(self.name, context)
        if config.fail_above is not None and config.factor > config.fail_above:
            raise ValueError(f"factor {config.factor} is above {config.fail_above}")
        proto = onnx.load(str(model.model_file()))
        for i, init in enumerate(proto.graph.initializer):
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.float32:
                proto.graph.initializer[i].CopyFrom(
                    numpy_helper.from_array((arr * config.factor).astype(np.float32), init.name))
            context.progress(i + 1, len(proto.graph.initializer), f"scaled {init.name}")
        out = context.work_dir / "model.onnx"
        onnx.save_model(proto, str(out), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=0)
        if config.pad:
            (context.work_dir / "padding.bin").write_bytes(b"\0" * int(config.factor * config.pad))
        return OnnxModel(path=str(context.work_dir), onnx_file_name="model.onnx")


@attrs.frozen
class SleepConfig:
    """Options of ``Sleep``."""

    seconds: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))


class Sleep(Pass):
    """Copy the model after sleeping, reporting progress (for kill and concurrency tests)."""

    name = "Sleep"
    Config = SleepConfig
    libraries = ("onnx",)

    def run(self, model: Any, config: SleepConfig, context: PassContext) -> OnnxModel:
        """Write half the output, sleep, then finish it."""
        _record(self.name, context)
        (context.work_dir / "partial.marker").write_text("started")
        steps = 20
        for i in range(steps):
            time.sleep(config.seconds / steps)
            context.progress(i + 1, steps, "sleeping")
        out = _copy_model(model, context)
        (context.work_dir / "partial.marker").unlink()
        return out


@attrs.frozen
class FailConfig:
    """Options of ``Fail``."""

    message: str = "something went wrong"
    kind: str = attrs.field(default="runtime", validator=attrs.validators.in_(["runtime", "usage"]))


class Fail(Pass):
    """Raise an error with ``message`` after writing a partial file."""

    name = "Fail"
    Config = FailConfig

    def run(self, model: Any, config: FailConfig, context: PassContext) -> OnnxModel:
        """Fail."""
        _record(self.name, context)
        (context.work_dir / "half-written.onnx").write_text("garbage")
        if config.kind == "usage":
            from olivine.errors import UsageError

            raise UsageError(config.message)
        raise RuntimeError(config.message)


@attrs.frozen
class CrashConfig:
    """Options of ``Crash``."""

    how: str = attrs.field(default="kill", validator=attrs.validators.in_(["kill", "exit", "none"]))


class Crash(Pass):
    """Kill its own process (SIGKILL) or exit with code 7, without reporting (or copy: ``none``)."""

    name = "Crash"
    Config = CrashConfig
    isolate = True

    def run(self, model: Any, config: CrashConfig, context: PassContext) -> OnnxModel:
        """Die."""
        _record(self.name, context)
        if config.how == "none":
            return _copy_model(model, context)
        print("about to crash", flush=True)
        if config.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(7)


@attrs.frozen
class TrainConfig:
    """Options of ``Train``."""

    steps: int = 10
    die_at: int | None = attrs.field(default=None, metadata=option(help="SIGKILL itself at this step "
                                                                        "on a first attempt"))


class Train(Pass):
    """Count to ``steps``, checkpointing each step in ``context.state_dir`` (resumable)."""

    name = "Train"
    Config = TrainConfig
    isolate = True

    def run(self, model: Any, config: TrainConfig, context: PassContext) -> OnnxModel:
        """Resume from the checkpoint, count, record where it started."""
        assert context.state_dir is not None
        ckpt = context.state_dir / "step.txt"
        start = int(ckpt.read_text()) if ckpt.exists() else 0
        _record(f"{self.name}-from-{start}", context)
        for step in range(start + 1, config.steps + 1):
            if config.die_at == step and start == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            ckpt.write_text(str(step))
            context.progress(step, config.steps, f"step {step}")
        out = _copy_model(model, context)
        return OnnxModel(path=out.path, onnx_file_name=out.onnx_file_name,
                         attributes={"resumed_from": start})


class WhereAmI(Pass):
    """Copy the model and record the interpreter and pid in its attributes."""

    name = "WhereAmI"
    isolate = True
    #: the second cannot be imported: a preload hint that fails must not fail the step
    preload = ("olivine_testkit.standby_probe", "olivine_testkit.no_such_module")

    def run(self, model: Any, config: Any, context: PassContext) -> OnnxModel:
        """Copy and stamp (``preloaded``: the probe was imported before this ran)."""
        import sys

        preloaded = "olivine_testkit.standby_probe" in sys.modules
        _record(self.name, context)
        out = _copy_model(model, context)
        return OnnxModel(path=out.path, onnx_file_name=out.onnx_file_name,
                         attributes={"python": sys.executable, "pid": os.getpid(),
                                     "preloaded": preloaded})


class WeightStats(Evaluator):
    """Size on disk and sum of absolute float weights of an ONNX model."""

    name = "WeightStats"
    metric_types = ("weight_stats",)
    sub_types = {"weight_stats": {"abs_sum": True, "bytes": False}}

    def evaluate(self, model: Any, metric: MetricConfig, context: Any) -> dict[str, float]:
        """Measure."""
        import numpy as np
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(model.model_file()))
        values = {
            "abs_sum": float(sum(np.abs(numpy_helper.to_array(i)).sum()
                                 for i in proto.graph.initializer)),
            "bytes": float(sum(f.stat().st_size for f in model.files())),
        }
        wanted = [s.name for s in metric.sub_types] or list(values)
        return {k: values[k] for k in wanted}


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the test passes."""
    for cls in (Scale, Sleep, Fail, Crash, WhereAmI, Train):
        register(cls)


@olivine.hookimpl
def register_evaluators(register: Any) -> None:
    """Register the test evaluator."""
    register(WeightStats)
