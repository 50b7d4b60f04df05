"""olivine-evaluators: metrics for ONNX and Hugging Face models, and ``olivine benchmark``.

Metric types: latency, throughput, size_on_disk, accuracy, similarity, perplexity,
custom; and Olive's evaluator types LMEvaluator (extra ``lmeval``) and MTEBEvaluator
(extra ``mteb``). Importing this package is cheap: onnxruntime and torch are imported when
a metric is measured.
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine_evaluators.lmeval import LMEvaluator
from olivine_evaluators.metrics import ALL
from olivine_evaluators.mteb import MTEBEvaluator

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"

__version__ = "0.1.0"


@olivine.hookimpl
def register_evaluators(register: Any) -> None:
    """Register every evaluator of this plugin."""
    for cls in (*ALL, LMEvaluator, MTEBEvaluator):
        register(cls)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``olivine benchmark``."""
    from olivine_evaluators import cli

    register("benchmark", "print latency and throughput of an ONNX (or Hugging Face) model",
             cli.configure, cli.handler)
