"""``olivine extract-adapters``: peft adapters and ONNX models built with one, out into files.

The expected tensors are computed here from the peft model itself (``A^T``, ``B^T x scaling``,
under the model builder's names). Checked once against Olive 0.13 on a tiny Qwen2 with a
rank-4 adapter (q/v/down projections): Olive's ``tone.npz`` holds the same 12 arrays
(max difference 0.0), its names prefixed with ``base_model.model.`` (which no ONNX model's
inputs carry; olivine writes the names the model's LoRA inputs have).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("peft")
DATA = Path(__file__).parent / "data"
TARGETS = ["q_proj", "v_proj", "down_proj"]


def tiny_base(folder: Path) -> Path:
    """A tiny random Qwen2 (config of ``data/tiny-qwen2-config.json``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "tiny-qwen2-config.json", folder / "config.json")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    return folder


def make_adapter(base: Path, folder: Path, seed: int, rank: int = 4) -> dict[str, Any]:
    """Save a random LoRA adapter for ``base``; return the expected tensors by builder name."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=rank, lora_alpha=2 * rank + seed, target_modules=TARGETS, task_type="CAUSAL_LM"))
    expected = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            module.lora_B["default"].weight.normal_(0, 0.05)
            onnx = name.removeprefix("base_model.model.").replace(".self_attn.", ".attn.")
            expected[f"{onnx}.lora_A.MatMul.weight"] = module.lora_A["default"].weight.T.numpy().copy()
            expected[f"{onnx}.lora_B.MatMul.weight"] = (
                module.lora_B["default"].weight.T * module.scaling["default"]).numpy().copy()
    model.save_pretrained(folder)
    return expected


def read_onnx_adapter(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    fmt = ort.AdapterFormat.read_adapter(str(path))
    return {k: np.array(v.numpy(), copy=True) for k, v in fmt.get_parameters().items()}


def lora_onnx_model(weights: dict[str, Any], folder: Path) -> Path:
    """An ONNX model laid out as the model builder writes LoRA: ``MatMul(MatMul(x, A), B)`` with
    ``A``/``B`` initializers named ``...lora_A.MatMul.weight``, nodes ``.../lora_A/MatMul``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs = [], [], [], []
    for a_name in sorted(n for n in weights if ".lora_A." in n):
        b_name = a_name.replace(".lora_A.", ".lora_B.")
        module = a_name.split(".lora_A.")[0]
        path = "/" + module.replace(".", "/").replace("layers/", "layers.", 1)
        x, h, y = f"{module}.x", f"{module}.h", f"{module}.y"
        nodes += [helper.make_node("MatMul", [x, a_name], [h], name=f"{path}/lora_A/MatMul"),
                  helper.make_node("MatMul", [h, b_name], [y], name=f"{path}/lora_B/MatMul")]
        inits += [numpy_helper.from_array(weights[a_name], a_name),
                  numpy_helper.from_array(weights[b_name], b_name)]
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, weights[a_name].shape[0]]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "lora", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A folder as Olive reads it: the base model's config and two adapters in sub-folders."""
    root = tmp_path_factory.mktemp("adapters")
    base = tiny_base(root / "base")
    layout = root / "model"
    shutil.copytree(base, layout)
    expected = {"tone": make_adapter(base, layout / "tone", 1),
                "style": make_adapter(base, layout / "style", 2, rank=8)}
    return layout, expected


def test_peft_folders_to_every_format(adapters: tuple[Path, dict[str, Any]], tmp_path: Path,
                                      cli: Any) -> None:
    from safetensors.numpy import load_file

    layout, expected = adapters
    for fmt in ("onnx_adapter", "numpy", "safetensors"):
        code, out, err = cli("extract-adapters", "-m", str(layout), "-f", fmt, "-o",
                             str(tmp_path / fmt))
        assert code == 0, err
        suffix = ".npz" if fmt == "numpy" else f".{fmt}"
        for name, want in expected.items():
            path = tmp_path / fmt / f"{name}{suffix}"
            assert f"Exported {name} adapter weights to {path}" in out
            got = read_onnx_adapter(path) if fmt == "onnx_adapter" else (
                dict(np.load(path)) if fmt == "numpy" else load_file(str(path)))
            assert sorted(got) == sorted(want) and len(want) == 2 * 2 * len(TARGETS)
            for key, value in want.items():
                assert got[key].dtype == np.float32 and got[key].shape == value.shape
                np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7)
        assert not [p for p in (tmp_path / fmt).iterdir() if ".tmp-" in p.name]
    code, _, err = cli("extract-adapters", "-m", str(layout / "tone"), "-f", "numpy", "--dtype",
                       "float16", "-o", str(tmp_path / "half"))
    assert code == 0, err
    got = dict(np.load(tmp_path / "half" / "default.npz"))  # a folder that is one adapter
    for key, value in expected["tone"].items():
        assert got[key].dtype == np.float16
        np.testing.assert_allclose(got[key].astype(np.float32), value, rtol=1e-3, atol=1e-4)


def test_onnx_model_lora_weights(adapters: tuple[Path, dict[str, Any]], tmp_path: Path,
                                 cli: Any) -> None:
    import onnxruntime as ort

    _, expected = adapters
    weights = expected["style"]
    model = lora_onnx_model(weights, tmp_path / "onnx-model")
    ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])  # it runs
    code, out, err = cli("extract-adapters", "-m", str(model), "-f", "onnx_adapter", "-o",
                         str(tmp_path / "out"))
    assert code == 0, err
    got = read_onnx_adapter(tmp_path / "out" / "default.onnx_adapter")
    assert sorted(got) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(got[key], value)
    code, out, _ = cli("extract-adapters", "-m", str(model / "model.onnx"), "-f", "numpy",
                       "--dry_run", "-o", str(tmp_path / "dry"))
    assert code == 0 and "default: 12 tensors" in out and not (tmp_path / "dry").exists()


def test_bad_input(tmp_path: Path, cli: Any, onnx_model: Path) -> None:
    code, _, err = cli("extract-adapters", "-m", str(tmp_path / "nope"), "-f", "numpy")
    assert code == 2 and "--model_name_or_path" in err and "no such" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("extract-adapters", "-m", str(tmp_path / "empty"), "-f", "numpy")
    assert code == 2 and "nothing to extract" in err
    code, _, err = cli("extract-adapters", "-m", str(onnx_model), "-f", "numpy")
    assert code == 2 and "no LoRA weights" in err and "Traceback" not in err
    code, _, err = cli("extract-adapters", "-m", str(tmp_path), "-f", "numpy", "--test")
    assert code == 2 and "--test" in err
    with pytest.raises(SystemExit) as exc:  # -f is required, as in Olive
        cli("extract-adapters", "-m", str(tmp_path))
    assert exc.value.code == 2


@pytest.mark.slow
def test_modelbuilder_model_with_adapter(tmp_path: Path, cli: Any, cache_root: Path) -> None:
    """A real onnxruntime-genai model that ModelBuilder built with an adapter (76 s here)."""
    pytest.importorskip("onnxruntime_genai")
    import olivine
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    base = cached_model(TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=256, tie_word_embeddings=False, steps=300,
                                 seconds=None, batch_size=16, seq_len=48, learning_rate=4e-3, seed=0),
                        cache_root / "trained")  # the LoRA tests' base model
    want = make_adapter(base, tmp_path / "adapter", 3)
    result = olivine.run({"input_model": {"type": "HfModel", "model_path": str(base),
                                          "adapter_path": str(tmp_path / "adapter")},
                          "passes": {"mb": {"type": "ModelBuilder", "precision": "fp32"}},
                          "output_dir": str(tmp_path / "onnx"), "cache_dir": str(tmp_path / "c"),
                          "log_severity_level": 3})
    code, _, err = cli("extract-adapters", "-m", str(result.output_dir), "-f", "onnx_adapter",
                       "-o", str(tmp_path / "out"))
    assert code == 0, err
    got = read_onnx_adapter(tmp_path / "out" / "default.onnx_adapter")
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7)
