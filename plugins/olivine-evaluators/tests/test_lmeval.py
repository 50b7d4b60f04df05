"""LMEvaluator: olivine's lm-eval adapter on ONNX Runtime and onnxruntime-genai against lm-eval's
own ``hf`` backend on the torch model, and the evaluator's config errors.

The model is the modelbuilder tests' tiny Qwen2 trained on the Sonnets (cached between runs),
built to fp32 by ModelBuilder. The tasks are local (jsonl files this test writes), offline.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

import olivine
from olivine.testing import seed
from olivine_modelbuilder.tinymodel import TinySpec, cached_model, chat_turn, sonnets

pytest.importorskip("lm_eval", reason="olivine-evaluators[lmeval] is not installed")

#: The modelbuilder tests' trained model (the same spec, so the same cached folder).
SPEC = TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                tie_word_embeddings=False, steps=300, seconds=None, batch_size=16, seq_len=48,
                learning_rate=4e-3, seed=seed())
DOCS = 12


@pytest.fixture(scope="module")
def trained(cache_root: Path) -> Path:
    """The tiny Qwen2 chat model trained on the Sonnets."""
    return cached_model(SPEC, cache_root / "trained")


@pytest.fixture(scope="module")
def built(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model built to fp32 by ModelBuilder (in this process): its folder."""
    from olivine import Accelerator, HfModel, PassContext
    from olivine_modelbuilder.config import ModelBuilderConfig
    from olivine_modelbuilder.passes import ModelBuilder

    work = tmp_path_factory.mktemp("build") / "output"
    work.mkdir()
    out = ModelBuilder().run(HfModel(path=str(trained)), ModelBuilderConfig(precision="fp32"),
                             PassContext(work_dir=work, step_name="build", accelerator=Accelerator()))
    return Path(out.model_file()).parent


def _tasks(folder: Path) -> list[dict[str, Any]]:
    """Three local tasks, one per request type: next-line multiple choice (loglikelihood),
    sonnet lines' perplexity (loglikelihood_rolling) and next-line generation (generate_until)."""
    rng = random.Random(0)
    pairs = [p for poem in sonnets()[:20] for p in itertools.pairwise(poem)]
    rng.shuffle(pairs)
    lines = [b for _, b in pairs]
    rows = []
    for a, b in pairs[:DOCS]:
        choices = [b, *rng.sample([x for x in lines if x != b], 3)]
        rng.shuffle(choices)
        rows.append({"prompt": chat_turn(a), "choices": choices, "label": choices.index(b),
                     "text": b, "answer": b})
    data = folder / "sonnets.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
              "test_split": "test"}
    return [
        {**common, "task": "sonnet_next", "output_type": "multiple_choice",
         "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
         "doc_to_target": "{{label}}", "target_delimiter": "",
         "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]},
        {**common, "task": "sonnet_ppl", "output_type": "loglikelihood_rolling",
         "doc_to_text": "", "doc_to_target": "{{text}}",
         "metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]},
        {**common, "task": "sonnet_gen", "output_type": "generate_until",
         "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}", "target_delimiter": "",
         "generation_kwargs": {"until": ["<|im_end|>", "\n"], "do_sample": False,
                               "max_gen_toks": 24},
         "metric_list": [{"metric": "exact_match"}]},
    ]


def _samples(results: dict[str, Any]) -> dict[str, list[Any]]:
    """Each task's responses in document order (log-likelihoods, or generated text)."""
    out = {}
    for task, samples in results["samples"].items():
        ordered = sorted(samples, key=lambda s: s["doc_id"])
        out[task] = [[r[0] for r in s["resps"]] for s in ordered]
    return out


def test_lmevaluator_matches_lm_eval_hf_backend(trained: Path, built: Path,
                                                 tmp_path: Path) -> None:
    from lm_eval import simple_evaluate

    from olivine import Accelerator, EvalContext, HfModel, OnnxModel
    from olivine_evaluators._lmeval_run import make_lm, task_manager

    tasks = _tasks(tmp_path)
    ref = simple_evaluate(model="hf", model_args={"pretrained": str(trained), "dtype": "float32",
                                                   "device": "cpu"},
                          tasks=tasks, task_manager=task_manager(tasks), batch_size=2,
                          bootstrap_iters=0, log_samples=True)
    assert ref is not None
    expected = _samples(ref)
    # through a workflow: the ModelBuilder output scored with ONNX Runtime (Olive's default 'ort')
    wf = {"input_model": {"type": "ONNXModel", "model_path": str(built)},
          "evaluators": {"lm": {"type": "LMEvaluator", "tasks": tasks, "batch_size": 2,
                                "bootstrap_iters": 0}},
          "evaluator": "lm", "evaluate_input_model": False, "output_dir": str(tmp_path / "out"),
          "cache_dir": str(tmp_path / "cache"), "log_severity_level": 3}
    result = olivine.run(wf)
    run_json = json.loads(result.report_path.read_text())
    got = run_json["metrics"]["output_model"]
    assert got == result.metrics["output_model"]
    want = ref["results"]
    # lm-eval's numbers named as Olive names them (the filter and the stderr entries dropped);
    # an inline task's metric_list names its sub-metrics
    assert got["sonnet_next"] == {"acc": want["sonnet_next"]["acc,none"],
                                  "acc_norm": want["sonnet_next"]["acc_norm,none"]}
    assert got["sonnet_ppl"]["word_perplexity"] == pytest.approx(
        want["sonnet_ppl"]["word_perplexity,none"], rel=1e-4)
    assert got["sonnet_gen"] == {"exact_match": want["sonnet_gen"]["exact_match,none"]}
    # per request, each scorer: log-likelihoods within 1e-3 of lm-eval's hf backend, same text
    # (measured max |difference|: 1.3e-5 ort and ortgenai, 1.4e-5 olivine's torch scorer)
    onnx = OnnxModel(path=str(built))
    context = EvalContext(Accelerator(), {}, HfModel(path=str(trained)))
    for model, kind in ((onnx, "ort"), (onnx, "ortgenai"), (HfModel(path=str(trained)), "hf")):
        lm = make_lm(model, {"model_class": kind, "batch_size": 2}, context)
        mine = simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager(tasks),
                               bootstrap_iters=0, log_samples=True)
        assert mine is not None
        have = _samples(mine)
        for task in ("sonnet_next", "sonnet_ppl"):
            for want_row, have_row in zip(expected[task], have[task], strict=True):
                assert _lls(have_row) == pytest.approx(_lls(want_row), abs=1e-3), (kind, task)
        assert have["sonnet_gen"] == expected["sonnet_gen"], kind
        assert mine["results"]["sonnet_next"]["acc,none"] == want["sonnet_next"]["acc,none"]


def test_metric_form_goals(built: Path, tmp_path: Path, cli: Any) -> None:
    """The metric form names sub-metrics with priorities and goals, as for any metric."""
    task = _tasks(tmp_path)[0]
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({
        "input_model": {"type": "ONNXModel", "model_path": str(built)},
        "evaluators": {"lm": {"metrics": [{
            "name": "next", "type": "LMEvaluator",
            "user_config": {"tasks": [task], "bootstrap_iters": 0, "limit": 4},
            "sub_types": [{"name": "acc", "priority": 1,
                           "goal": {"type": "threshold", "value": 1.01}}]}]}},
        "evaluator": "lm", "evaluate_input_model": False, "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"), "log_severity_level": 3}))
    code, _, err = cli("run", "--config", str(path))
    assert code == 0, err  # no search: published with the missed goal reported, as Olive
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["goals"][0]["metric"] == "next-acc" and report["goals_met"] is False
    assert report["missed_goals"][0].startswith("next-acc = ")  # accuracy cannot reach 1.01
    assert list(report["metrics"]["output_model"]["next"]) == ["acc"]


def _lls(row: list[Any]) -> list[float]:
    return [float(r[0]) if isinstance(r, tuple | list) else float(r) for r in row]


def _wf(tmp_path: Path, model: Path, evaluator: dict[str, Any]) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "fp32"}},
        "evaluators": {"lm": evaluator}, "evaluator": "lm",
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}))
    return path


def test_unknown_option_and_bad_values_are_config_errors(trained: Path, tmp_path: Path,
                                                         cli: Any) -> None:
    path = _wf(tmp_path, trained, {"type": "LMEvaluator", "tasks": ["hellaswag"],
                                   "batch_sz": 2, "limit": -1, "model_class": "onnx"})
    code, _, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 2
    assert "evaluators.lm.batch_sz: unknown LMEvaluator option (did you mean 'batch_size'" in err
    assert "evaluators.lm.limit:" in err and "evaluators.lm.model_class:" in err
    assert "Traceback" not in err


def test_missing_extra_is_a_config_error(trained: Path, tmp_path: Path, cli: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    path = _wf(tmp_path, trained, {"type": "LMEvaluator", "tasks": ["hellaswag"]})
    code, _, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 2
    assert "pip install 'olivine-evaluators[lmeval]'" in err


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "no-datasets"))


def _steps_run(tmp_path: Path) -> list[Any]:
    reports = list((tmp_path / "cache").rglob("run.json"))
    assert len(reports) == 1
    return list(json.loads(reports[0].read_text())["steps"])


#: A recipe-style inline task (as tencent-HY-MT1.5-1.8B's wmt18) over a hub dataset.
HUB_TASK = {"task": "arc_easy_inline", "dataset_path": "allenai/ai2_arc",
            "dataset_name": "ARC-Easy", "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices.text}}",
            "doc_to_target": "{{choices.label.index(answerKey)}}",
            "metric_list": [{"metric": "acc"}]}


def test_hub_task_offline_fails_before_any_pass(trained: Path, tmp_path: Path, cli: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch, tmp_path)
    path = _wf(tmp_path, trained, {"type": "LMEvaluator", "tasks": [HUB_TASK], "limit": 4})
    code, out, _ = cli("run", "--config", str(path), "--dry-run")
    assert code == 0, out  # a dry run validates the options only: no hub
    assert "arc_easy_inline (LMEvaluator)" in out
    code, _, err = cli("run", "--config", str(path))
    assert code == 2
    assert "LMEvaluator task 'arc_easy_inline' needs dataset allenai/ai2_arc" in err
    assert "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert _steps_run(tmp_path) == []  # ModelBuilder never ran


@pytest.mark.slow  # lm-eval reads the index of every task it ships (up to a minute)
def test_named_hub_task_offline(trained: Path, tmp_path: Path, cli: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch, tmp_path)
    path = _wf(tmp_path, trained, {"type": "LMEvaluator", "tasks": ["arc_easy", "hellaswag"]})
    code, _, err = cli("run", "--config", str(path))
    assert code == 2
    assert "LMEvaluator task 'arc_easy' needs dataset allenai/ai2_arc" in err
    assert _steps_run(tmp_path) == []
    path = _wf(tmp_path, trained, {"type": "LMEvaluator", "tasks": ["hellaswagg"]})
    code, _, err = cli("run", "--config", str(path))
    assert code == 2 and "lm-eval knows no task 'hellaswagg' (did you mean 'hellaswag'" in err
