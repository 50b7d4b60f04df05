"""The evaluator classes this plugin registers (light: the work is in :mod:`._measure`).

Metric types: ``latency``, ``throughput``, ``size_on_disk``, ``accuracy``,
``similarity``, ``perplexity`` and ``custom``. Each takes ONNX models and Hugging
Face models (run with torch), so a workflow can measure its input model too.
"""

from __future__ import annotations

from typing import Any

from olivine import EvalContext, Evaluator, MetricConfig, ModelHandle

#: Latency percentiles and statistics, in milliseconds (lower is better).
LATENCY_SUBS = ("avg", "p50", "p75", "p90", "p95", "p99", "p999", "min", "max", "std")


def wanted(metric: MetricConfig, available: dict[str, bool]) -> list[str]:
    """The sub-metric names ``metric`` asks for (all of them when it names none)."""
    return [s.name for s in metric.sub_types] or list(available)


class LatencyEvaluator(Evaluator):
    """Wall-clock time of one inference: warm-up runs, then N timed runs (milliseconds).

    ``user_config``: ``warmup_num`` (10), ``repeat_test_num`` (100), ``sleep_num`` (0 s
    between runs), ``batch_size`` (1), ``seq_len`` (128), ``intra_op_num_threads``,
    ``inter_op_num_threads``, ``execution_provider``, and Olive's ``inference_settings``
    (``{"onnx": {...}}``) and ``io_bind``, over the model's own ``inference_settings``.
    Inputs are the first batch of the metric's data config, or random token ids of
    ``batch_size`` x ``seq_len``.
    """

    name = "latency"
    metric_types = ("latency",)
    sub_types = {"latency": {s: False for s in LATENCY_SUBS}}
    accepts = ("onnx", "hf", "openvino")
    libraries = ("onnxruntime", "torch")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Time the model and return the requested statistics."""
        from olivine_evaluators._measure import latency_metric

        return latency_metric(model, metric, context, wanted(metric, self.sub_types["latency"]))


class ThroughputEvaluator(Evaluator):
    """Samples per second (batch size / latency of each run), same options as latency."""

    name = "throughput"
    metric_types = ("throughput",)
    sub_types = {"throughput": {s: True for s in LATENCY_SUBS if s != "std"}}
    accepts = ("onnx", "hf", "openvino")
    libraries = ("onnxruntime", "torch")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Time the model and return throughput statistics."""
        from olivine_evaluators._measure import throughput_metric

        return throughput_metric(model, metric, context,
                                 wanted(metric, self.sub_types["throughput"]))


class SizeOnDiskEvaluator(Evaluator):
    """Bytes of the model's files (``bytes``) and the same in MiB (``mib``)."""

    name = "size_on_disk"
    metric_types = ("size_on_disk",)
    sub_types = {"size_on_disk": {"bytes": False, "mib": False}}
    accepts = ("onnx", "hf")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Sum the sizes of the model's weight and graph files."""
        files = model.files()
        if model.kind == "hf":
            files = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth")]
        total = float(sum(f.stat().st_size for f in files))
        values = {"bytes": total, "mib": total / 2**20}
        return {k: values[k] for k in wanted(metric, self.sub_types["size_on_disk"])}


class SimilarityEvaluator(Evaluator):
    """Agreement with the reference (input) model's outputs on the metric's data.

    ``cosine``/``min_cosine``: cosine similarity of sentence embeddings (mean pooling
    over the attention mask by default; ``user_config.pooling``: mean, cls or none) or
    of logits; ``top1_agreement``: share of samples whose argmax class matches;
    ``max_abs_diff``: largest elementwise difference. ``user_config.output_name``
    picks the output (default: the first). The reference's outputs are computed once
    per run and reused.
    """

    name = "similarity"
    metric_types = ("similarity",)
    sub_types = {"similarity": {"cosine": True, "min_cosine": True, "top1_agreement": True,
                                "max_abs_diff": False}}
    accepts = ("onnx", "hf", "openvino")
    libraries = ("onnxruntime", "torch", "transformers")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Compare the model's outputs with the reference's."""
        from olivine_evaluators._quality import similarity_metric

        return similarity_metric(model, metric, context,
                                 wanted(metric, self.sub_types["similarity"]))


#: Olive's speech-recognition sub-metrics of ``accuracy``, which olivine cannot compute.
SPEECH_SUBS = {
    "wer": "'wer' (word error rate) is Olive's speech-recognition sub-metric",
    "rtfx": "'rtfx' (inverse real-time factor: seconds of audio transcribed per second) is "
            "Olive's speech-recognition sub-metric",
}
SPEECH_WHY = (": Olive computes it by transcribing the data config's audio (an onnxruntime-genai "
              "Whisper or Nemotron speech model, or a plain ONNX model with a post-processing "
              "function that decodes text); olivine's accuracy evaluator scores classification "
              "labels only and cannot transcribe audio. Drop it, or compute it with a custom "
              "metric (user_config.user_script and evaluate_func)")


class AccuracyEvaluator(Evaluator):
    """Classification quality against the data config's labels (``label_col``).

    Sub-metrics by Olive's names: with ``backend`` ``torch_metrics`` (the default)
    ``accuracy_score``, ``f1_score``, ``precision``, ``recall``, ``auroc`` (torchmetrics'
    ``task``, ``num_classes``, ``average`` in ``metric_config``); with
    ``huggingface_metrics`` ``accuracy``, ``f1``, ``precision``, ``recall`` (``compute_params``).
    See :mod:`olivine_evaluators.classify`. Predictions are the argmax of
    ``user_config.output_name`` (default ``logits``). With ``user_config.user_script`` and
    ``evaluate_func`` the user's function computes the metric instead (see ``custom``).
    """

    name = "accuracy"
    metric_types = ("accuracy",)
    sub_types = {"accuracy": {s: True for s in ("accuracy_score", "f1_score", "precision",
                                                 "recall", "auroc", "accuracy", "f1")}}
    accepts = ("onnx", "hf", "openvino")
    libraries = ("onnxruntime", "torch", "transformers")

    @classmethod
    def check_metric(cls, metric: MetricConfig) -> list[tuple[str, str]]:
        """Sub-metric names and metric_config keys of the metric's backend."""
        from olivine_evaluators.classify import BACKENDS, HF_NAMES, TORCH_NAMES, config_problems

        backend = metric.backend or "torch_metrics"
        if backend not in BACKENDS or metric.user_config.get("evaluate_func"):
            return []
        names = HF_NAMES if backend == "huggingface_metrics" else TORCH_NAMES
        out = []
        for j, sub in enumerate(metric.sub_types):
            if sub.name in SPEECH_SUBS:
                out.append((f"sub_types[{j}].name", SPEECH_SUBS[sub.name] + SPEECH_WHY))
                continue
            if sub.name not in names:
                out.append((f"sub_types[{j}].name", f"{sub.name!r} is not a {backend} accuracy "
                            f"sub-metric; expected one of {', '.join(names)}"))
                continue
            for key, msg in config_problems(sub.name, backend, sub.metric_config):
                out.append((f"sub_types[{j}].metric_config.{key}", msg))
        return out

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Predict every sample and score against the labels."""
        from olivine_evaluators._quality import accuracy_metric, custom_metric

        if metric.user_config.get("evaluate_func"):
            return custom_metric(model, metric, context)
        return accuracy_metric(model, metric, context)


class CustomEvaluator(Evaluator):
    """A user function computes the metric.

    ``user_config``: ``user_script`` (a Python file), ``evaluate_func`` (a function in
    it), ``evaluate_func_kwargs`` (extra keyword arguments). The function is called as
    ``evaluate_func(model, data, **kwargs)``: ``model`` has ``run(feeds) -> {name:
    array}``, ``input_names`` and ``path``; ``data`` is the metric's data config loaded
    as tokenized batches (``data.batches``, ``data.texts``, ``data.labels``) or ``None``.
    It returns a number (for the single sub-metric) or ``{sub_metric: number}``.
    """

    name = "custom"
    metric_types = ("custom",)
    sub_types = {}  # the user's function names its sub-metrics
    accepts = ("onnx", "hf", "openvino")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Call the user's function."""
        from olivine_evaluators._quality import custom_metric

        return custom_metric(model, metric, context)


class PerplexityEvaluator(Evaluator):
    """Perplexity of a causal language model on the data config's texts (ONNX Runtime or torch).

    ONNX models are fed ``input_ids``, ``attention_mask``, ``position_ids`` when they
    take them, and empty ``past_key_values.*`` inputs when exported with a cache.
    """

    name = "perplexity"
    metric_types = ("perplexity",)
    sub_types = {"perplexity": {"perplexity": False, "loss": False}}
    accepts = ("onnx", "hf")
    libraries = ("onnxruntime", "torch", "transformers")

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Mean next-token cross-entropy over non-padding tokens, and its exponential."""
        from olivine_evaluators._quality import perplexity_metric

        return perplexity_metric(model, metric, context,
                                 wanted(metric, self.sub_types["perplexity"]))


ALL: tuple[Any, ...] = (LatencyEvaluator, ThroughputEvaluator, SizeOnDiskEvaluator,
                        SimilarityEvaluator, AccuracyEvaluator, CustomEvaluator,
                        PerplexityEvaluator)
