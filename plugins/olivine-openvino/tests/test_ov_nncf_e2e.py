"""NNCF end to end: OpenVINOQuantizationWithAccuracy and OpenVINOWeightCompression on real
models (a tiny BERT classifier; the trained tiny Qwen2 of the LLM recipe test). The output IRs
run on the OpenVINO runtime and are compared with torch and the float IR; the options that
change the result are checked to change it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine.testing import record_quality, seed
from olivine_testutil import sonnet_prompt_ids, trained_llm

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _run(tmp_path: Path, name: str, input_model: dict[str, Any], passes: dict[str, Any],
         **extra: Any) -> Path:
    """Run a workflow; the IR it wrote."""
    import olivine

    result = olivine.run({"input_model": input_model, "passes": passes,
                          "output_dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache"),
                          "log_severity_level": 3, **extra})
    return next(Path(result.output_dir or "").rglob("*.xml"))


def _op_count(xml: Path, op_type: str) -> int:
    import openvino as ov

    return sum(op.get_type_name() == op_type for op in ov.Core().read_model(str(xml)).get_ops())


def test_quantization_with_accuracy_keeps_validation_accuracy(tmp_path: Path) -> None:
    """A tiny BERT converted to a [1, 32] IR, then NNCF int8 with accuracy control on local
    pairs (the data layer's HuggingfaceContainer; labels: torch's predictions, half of each
    class) and Olive's default validation (top-1 accuracy). max_drop 0 must keep every
    prediction, so NNCF puts layers back to float; max_drop 1 keeps every quantizer."""
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from olivine_testutil import tiny_bert_classifier, write_sentence_pairs

    model_dir = tiny_bert_classifier(tmp_path / "bert")
    net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    pairs = write_sentence_pairs(tmp_path / "pairs.jsonl", 48)
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    feeds = [{k: v.numpy() for k, v in tok(r["sentence1"], r["sentence2"], return_tensors="pt",
                                           truncation=True, max_length=32,
                                           padding="max_length").items()} for r in rows]
    with torch.no_grad():
        def logits(f: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(net(**{k: torch.from_numpy(v) for k, v in f.items()}).logits[0])

        margins = np.array([float(np.diff(logits(f))[0]) for f in feeds])
        net.classifier.bias[1] -= float(np.median(margins))  # torch predicts each class for half
        ref = np.stack([logits(f) for f in feeds])
    labels = ref.argmax(1)
    assert 20 <= labels.sum() <= 28, labels
    net.save_pretrained(model_dir)
    pairs.write_text("".join(json.dumps({**r, "label": int(y)}) + "\n"
                             for r, y in zip(rows, labels, strict=True)))
    (tmp_path / "script.py").write_text(
        "from transformers import AutoTokenizer\n"
        f"def example():\n    return dict(AutoTokenizer.from_pretrained({str(model_dir)!r})("
        "'an example', 'pair', padding='max_length', max_length=32, return_tensors='pt'))\n")
    data = [{"name": "pairs", "type": "HuggingfaceContainer",
             "load_dataset_config": {"data_files": str(pairs)},
             "pre_process_data_config": {"input_cols": ["sentence1", "sentence2"],
                                         "label_col": "label", "max_length": 32,
                                         "padding": "max_length"}}]
    model = {"type": "HfModel", "model_path": str(model_dir), "task": "text-classification"}
    conv = {"type": "OpenVINOConversion", "user_script": str(tmp_path / "script.py"),
            "example_input_func": "example", "input_shapes": [[1, 32]] * 3}
    core = ov.Core()
    outputs, fq = {}, {}
    for drop in (0.0, 1.0):
        xml = _run(tmp_path, f"drop{drop}", model, {
            "conv": conv, "quant": {"type": "OpenVINOQuantizationWithAccuracy",
                                    "data_config": "pairs", "max_drop": drop}},
            data_configs=data)
        assert xml.name == "ov_model_quant.xml"
        compiled = core.compile_model(core.read_model(str(xml)), "CPU")
        outputs[drop] = np.stack([compiled(f)[0][0] for f in feeds])
        fq[drop] = _op_count(xml, "FakeQuantize")
    accuracy = {d: float(np.mean(o.argmax(1) == labels)) for d, o in outputs.items()}
    err = {d: float(np.max(np.abs(o - ref))) for d, o in outputs.items()}
    record_quality("openvino quantization with accuracy control", fq_drop0=fq[0.0],
                   fq_drop1=fq[1.0], acc_drop0=accuracy[0.0], acc_drop1=accuracy[1.0],
                   err_drop0=err[0.0], err_drop1=err[1.0], logit_std=float(np.std(ref)))
    # measured (seed 0): max_drop 0 -> 1 FakeQuantize left of 23, accuracy 1.0, max |IR - torch|
    # 0.136 (logits' std 0.20); max_drop 1 -> 23 FakeQuantize, accuracy 0.625, max error 0.476
    assert accuracy[0.0] == 1.0, (accuracy, fq)
    assert fq[1.0] > 15 and fq[0.0] < fq[1.0], fq
    assert err[0.0] < 0.25, err
    assert accuracy[1.0] < 1.0 and err[1.0] > err[0.0], (accuracy, err)


def _bag_of_words(vocab: int, bias: np.ndarray) -> Any:
    """An ONNX classifier of three [1, 32] inputs: summed word + segment embeddings (masked)
    through a 2-layer MLP; seeded weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed())
    weights = {"emb": rng.standard_normal((vocab, 32)), "temb": rng.standard_normal((2, 32)),
               "w1": rng.standard_normal((32, 32)) / 4, "w2": rng.standard_normal((32, 2)) / 4,
               "b2": bias}
    init = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    init += [numpy_helper.from_array(np.array([i], np.int64), f"axis{i}") for i in (1, 2)]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("Gather", ["temb", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["e", "t"], ["et"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "axis2"], ["m3"]),
             helper.make_node("Mul", ["et", "m3"], ["em"]),
             helper.make_node("ReduceSum", ["em", "axis1"], ["s"], keepdims=0),
             helper.make_node("MatMul", ["s", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["l"]),
             helper.make_node("Add", ["l", "b2"], ["logits"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, 32])
              for n in ("input_ids", "token_type_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "bag", inputs, [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_quantization_with_accuracy_of_an_onnx_model(tmp_path: Path) -> None:
    """The ONNX route: NNCF hands Olive's default validation an onnx.ModelProto, run on an ONNX
    Runtime CPU session; max_drop 0 keeps every prediction, max_drop 1 every quantizer."""
    import onnx
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from olivine_testutil import tiny_bert_classifier, write_sentence_pairs

    tok_dir = tiny_bert_classifier(tmp_path / "bert")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    pairs = write_sentence_pairs(tmp_path / "pairs.jsonl", 48)
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    feeds = [{k: v.astype(np.int64) for k, v in tok(
        r["sentence1"], r["sentence2"], return_tensors="np", truncation=True, max_length=32,
        padding="max_length").items()} for r in rows]

    def run(model: Any) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return np.stack([session.run(None, f)[0][0] for f in feeds])

    first = run(_bag_of_words(len(tok), np.zeros(2)))
    model = _bag_of_words(len(tok), np.array([0.0, -np.median(first[:, 1] - first[:, 0])]))
    ref = run(model)
    labels = ref.argmax(1)
    assert 20 <= labels.sum() <= 28, labels
    (tmp_path / "onnx").mkdir()
    onnx.save(model, str(tmp_path / "onnx" / "model.onnx"))
    tok.save_pretrained(tmp_path / "onnx")
    pairs.write_text("".join(json.dumps({**r, "label": int(y)}) + "\n"
                             for r, y in zip(rows, labels, strict=True)))
    data = [{"name": "pairs", "type": "HuggingfaceContainer",
             "load_dataset_config": {"data_files": str(pairs)},
             "pre_process_data_config": {"input_cols": ["sentence1", "sentence2"],
                                         "label_col": "label", "max_length": 32,
                                         "padding": "max_length"}}]
    accuracy, quantizers = {}, {}
    for drop in (0.0, 1.0):
        import olivine

        result = olivine.run({
            "input_model": {"type": "ONNXModel", "model_path": str(tmp_path / "onnx" / "model.onnx")},
            "data_configs": data, "passes": {"quant": {
                "type": "OpenVINOQuantizationWithAccuracy", "data_config": "pairs", "max_drop": drop}},
            "output_dir": str(tmp_path / f"drop{drop}"), "cache_dir": str(tmp_path / "cache"),
            "log_severity_level": 3})
        out = next(Path(result.output_dir or "").rglob("*.onnx"))
        assert out.name == "model_quant.onnx"
        quantized = onnx.load(str(out))
        accuracy[drop] = float(np.mean(run(quantized).argmax(1) == labels))
        quantizers[drop] = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    record_quality("openvino quantization with accuracy control, onnx",
                   acc_drop0=accuracy[0.0], acc_drop1=accuracy[1.0], ql_drop0=quantizers[0.0],
                   ql_drop1=quantizers[1.0])
    # measured (seed 0): max_drop 0 -> 1 QuantizeLinear, accuracy 1.0; max_drop 1 -> 5, 0.79
    assert accuracy[0.0] == 1.0, (accuracy, quantizers)
    assert quantizers[0.0] < quantizers[1.0], quantizers
    assert accuracy[1.0] < 1.0, accuracy


def _llm_logits(xml: Path, ids: np.ndarray) -> np.ndarray:
    """Prompt logits of a stateful optimum-intel IR, one prompt per request (state reset)."""
    import openvino as ov

    core = ov.Core()
    request = core.compile_model(core.read_model(str(xml)), "CPU").create_infer_request()
    out = []
    for row in ids:
        request.reset_state()
        x = row[None]
        out.append(request.infer({"input_ids": x, "attention_mask": np.ones_like(x),
                                  "position_ids": np.arange(x.shape[1])[None].astype(np.int64),
                                  "beam_idx": np.zeros(1, np.int32)})["logits"][0])
    return np.array(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def _constant_types(xml: Path) -> dict[str, int]:
    import openvino as ov

    types = [op.get_output_element_type(0).get_type_name()
             for op in ov.Core().read_model(str(xml)).get_ops() if op.get_type_name() == "Constant"]
    return {t: types.count(t) for t in set(types)}


def test_weight_compression_of_an_llm_ir(tmp_path: Path, tmp_path_factory: Any) -> None:
    """The trained tiny Qwen2 exported to a float IR (OpenVINOOptimumConversion, fp32), then
    nncf.compress_weights through OpenVINOWeightCompression: int8 (NNCF's default mode), int4
    group 128, int4 group 32, int4 ratio 0.5. Each IR runs; its prompt logits stay close to the
    float IR's; mode, group size and ratio each change the weights written and the logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = trained_llm(tmp_path_factory.getbasetemp().parent / "olivine-tiny", "qwen2")
    fp_xml = _run(tmp_path, "fp", {"type": "HfModel", "model_path": str(model_dir)}, {
        "export": {"type": "OpenVINOOptimumConversion",
                   "extra_args": {"task": "text-generation-with-past"},
                   "ov_quant_config": {"weight_format": "fp32"}}})
    ids = np.array([sonnet_prompt_ids(model_dir, i)[:24] for i in range(3)], dtype=np.int64)
    fp = _llm_logits(fp_xml, ids)
    torch.manual_seed(seed())
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(model_dir).eval()(torch.from_numpy(ids)).logits
    # measured: max |float IR - torch| 3.8e-6
    np.testing.assert_allclose(fp, ref.float().numpy(), rtol=0, atol=1e-3)

    configs: dict[str, dict[str, Any] | None] = {
        "int8": None,
        "int4_g128": {"mode": "int4_asym", "group_size": 128, "ratio": 1.0},
        "int4_g32": {"mode": "int4_asym", "group_size": 32, "ratio": 1.0},
        "int4_g128_r05": {"mode": "int4_asym", "group_size": 128, "ratio": 0.5}}
    logits, types, size = {}, {}, {}
    fp_model = {"type": "OpenVINOModel", "model_path": str(fp_xml.parent)}
    for name, compress in configs.items():
        step = {"type": "OpenVINOWeightCompression"}
        if compress is not None:
            step["compress_config"] = compress
        xml = _run(tmp_path, name, fp_model, {"compress": step})
        assert (xml.parent / "openvino_tokenizer").is_dir()  # side files follow the IR
        logits[name] = _llm_logits(xml, ids)
        types[name] = _constant_types(xml)
        size[name] = xml.with_suffix(".bin").stat().st_size
    cos = {n: _cosine(v, fp) for n, v in logits.items()}
    top1 = {n: float(np.mean(v.argmax(-1) == fp.argmax(-1))) for n, v in logits.items()}
    record_quality("openvino weight compression", **{f"cos_{n}": v for n, v in cos.items()},
                   **{f"top1_{n}": v for n, v in top1.items()},
                   **{f"bin_{n}": v for n, v in size.items()})
    # measured (seed 0, 3 prompts x 24 positions): cosine to the float IR int8 0.99999,
    # int4 g128 0.99956, g32 0.99970, ratio 0.5 0.99970; top-1 agreement 1.0, 0.90, 0.93, 0.93
    assert cos["int8"] > 0.9999 and top1["int8"] >= 0.97, (cos, top1)
    for name in ("int4_g128", "int4_g32", "int4_g128_r05"):
        assert cos[name] > 0.998 and top1[name] >= 0.8, (name, cos, top1)
    # the weights written: u8 (int8), u4 with int8 backup for embeddings (int4, ratio 1), half
    # the layers' weights int4 at ratio 0.5; group 32 stores 4x the scales of group 128
    assert "u4" not in types["int8"] and types["int8"].get("u8", 0) >= 14, types
    assert types["int4_g128"].get("u4", 0) >= 14 and types["int4_g128"].get("u8", 0) <= 4, types
    assert 0 < types["int4_g128_r05"]["u4"] < types["int4_g128"]["u4"], types
    assert types["int4_g128_r05"]["u8"] > types["int4_g128"]["u8"], types
    fp_size = fp_xml.with_suffix(".bin").stat().st_size
    assert size["int4_g128"] < size["int4_g128_r05"] < size["int8"] < fp_size / 3, size
    assert size["int4_g128"] < size["int4_g32"], size
    names = list(logits)
    for i, a in enumerate(names):  # every option changed the result
        for b in names[:i]:
            assert float(np.max(np.abs(logits[a] - logits[b]))) > 0.05, (a, b)
