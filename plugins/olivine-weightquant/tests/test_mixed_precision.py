"""SelectiveMixedPrecision: Olive's choices, recorded in run.json, honoured by Gptq/Rtn/ModelBuilder.

The choices were checked against Olive 0.13 itself while developing (its SelectiveMixedPrecision
on the same random Qwen2 models, tied and untied, on the same six calibration windows): all
three k_quant algorithms and snr, snr_relative, iqe, iqe_relative and kld_gradient at sym
true/false chose exactly the same modules. The tests below need no Olive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import record_quality, seed

pytest.importorskip("olivine_modelbuilder")


# in tox -e slow (and benchmarks/quality_spread.py): on this project's CI machine (an AMD EPYC)
# the default run took 19 minutes with these, over its 15
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(cache_root: Path) -> Path:
    """A tiny untied Qwen2 (hidden 64, 4 layers) trained briefly on the Sonnets (a few seconds)."""
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    spec = TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    tie_word_embeddings=False, steps=300, seconds=None, batch_size=16, seq_len=48,
                    learning_rate=4e-3, seed=seed())
    return cached_model(spec, cache_root / "mixed-precision")


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Calibration text (a file) and held-out text."""
    from olivine_modelbuilder.tinymodel import corpus_text

    text = corpus_text()
    folder = tmp_path_factory.mktemp("text")
    calib = folder / "calib.txt"
    calib.write_text(text[:20000], encoding="utf-8")
    return calib, text[-6000:]


def _wf(tmp_path: Path, model: Path, passes: dict[str, Any]) -> dict[str, Any]:
    return {"input_model": {"type": "HfModel", "model_path": str(model)}, "passes": passes,
            "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
            "log_severity_level": 3}


def test_k_quant_mixed_flows_into_gptq_and_run_json(tmp_path: Path, trained: Path,
                                                     texts: tuple[Path, str]) -> None:
    import olivine
    from olivine_weightquant.hf_checkpoint import read_config

    passes = {"s": {"type": "SelectiveMixedPrecision", "algorithm": "k_quant_mixed", "bits": 4,
                    "sym": False, "group_size": 32},
              "g": {"type": "gptq", "bits": 4, "sym": False, "group_size": 32,
                    "data_files": [str(texts[0])], "max_samples": 8, "max_seq_len": 32}}
    result = olivine.run(_wf(tmp_path, trained, passes))
    info = result.report["steps"][0]["output_model"]["attributes"]["mixed_precision_info"]
    # 4 layers: layer 0 (the first eighth) and layer 2 ((2 - 0) % 3 == 2); the LM head always
    chosen = ["lm_head"] + [f"model.layers.{i}.{m}" for i in (0, 2) for m in
                            ("mlp.down_proj", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj")]
    assert info == {"default": {"bits": 4}, "overrides": {n: {"bits": 8} for n in sorted(chosen)}}
    run_json = json.loads((Path(result.output_dir) / "run.json").read_text())
    assert any((s.get("output_model") or {}).get("attributes", {}).get("mixed_precision_info") == info
               for s in run_json["steps"])
    qc = read_config(Path(result.report["steps"][1]["output_model"]["path"]))["quantization_config"]
    dynamic = qc.get("dynamic", {})
    eight = sorted(k.removeprefix("+:").replace("\\.", ".") for k, v in dynamic.items() if v.get("bits") == 8)
    assert eight == sorted(n for n in chosen if n != "lm_head")  # gptq leaves the head in float


def test_bad_options_are_config_errors(tmp_path: Path, trained: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from olivine.testing import cli_main as main

    for options, key in (({"algorithm": "kld_gradient"}, "ratio"), ({}, "algorithm"),
                         ({"algorithm": "k_quant_fast"}, "algorithm"),
                         ({"algorithm": "snr", "ratio": 0.5, "kld_memory_mode": "tiny"}, "kld_memory_mode")):
        config = tmp_path / "wf.json"
        config.write_text(json.dumps(_wf(tmp_path, trained, {"s": {"type": "SelectiveMixedPrecision",
                                                                   **options}})))
        assert main(["run", "--config", str(config)]) == 2, options
        err = capsys.readouterr().err
        assert f"passes.s.{key}" in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()


def _kl(reference: Any, model: Any, ids: Any) -> float:
    import torch

    with torch.no_grad():
        p = torch.log_softmax(reference(ids).logits.float(), -1)
        q = torch.log_softmax(model(ids).logits.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.quality
def test_kld_gradient_mix_is_closer_to_float_than_plain_int4(tmp_path: Path, trained: Path,
                                                              texts: tuple[Path, str]) -> None:
    """kld_gradient at Olive's recipe ratio (0.65 of the weights at 4 bits) then Rtn int4, against
    Rtn int4 alone: KL divergence of the next-token distributions to fp32's on held-out text.

    Measured by benchmarks/quality_spread.py over 12 runs (seeds 0-2 x torch kernels
    default/avx2/avx512 at one thread, seeds 0-2 at two threads): kl_mixed 4.6e-4 .. 6.4e-4,
    kl_plain 6.2e-3 .. 6.9e-3, ratio 0.072 .. 0.097. The bound 0.8 leaves a wide margin.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import olivine
    from olivine_weightquant.hf_checkpoint import load_dequantized

    calib, heldout = texts
    rtn = {"type": "rtn", "bits": 4, "sym": False, "group_size": 32, "lm_head": True}
    mixed = olivine.run(_wf(tmp_path / "mixed", trained, {
        "s": {"type": "SelectiveMixedPrecision", "algorithm": "kld_gradient", "bits": 4, "high_bits": 8,
              "ratio": 0.65, "sym": False, "group_size": 32, "data_files": [str(calib)],
              "max_samples": 16, "max_seq_len": 48},
        "r": rtn}))
    plain = olivine.run(_wf(tmp_path / "plain", trained, {"r": rtn}))
    info = mixed.report["steps"][0]["output_model"]["attributes"]["mixed_precision_info"]
    assert info["overrides"] and all(o["bits"] == 8 for o in info["overrides"].values())
    reference = AutoModelForCausalLM.from_pretrained(trained).eval()
    ids = AutoTokenizer.from_pretrained(trained)(heldout, return_tensors="pt").input_ids[:, :512]
    kl_mixed = _kl(reference, load_dequantized(mixed.report["steps"][1]["output_model"]["path"]), ids)
    kl_plain = _kl(reference, load_dequantized(plain.report["steps"][0]["output_model"]["path"]), ids)
    record_quality("mixed kld_gradient 0.65 vs plain int4: KL to fp32", kl_mixed=kl_mixed,
                   kl_plain=kl_plain, ratio=kl_mixed / kl_plain)
    assert kl_mixed < 0.8 * kl_plain  # measured 0.072 .. 0.097
