"""SliceGPT: sparsity 0 is the original model; at 0.125 and 0.25 the hidden size shrinks,
the model still runs in torch, converts through ModelBuilder and ONNX Runtime runs it,
and its predictions stay close to the original's (KL and perplexity on held-out text).

The tiny Llama has hidden size 64: sparsity 0.125 -> 56, 0.25 -> 48 (round_interval 8).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from rot_helpers import kl, ort_log_probs, random_model, torch_log_probs, window_ids, workflow

from olivine.testing import record_quality


def _slice(tmp: Path, model: Path, text: Path, **options: Any) -> Path:
    import olivine

    passes = {"s": {"type": "SliceGPT", "calibration_data_config": "calib",
                    "calibration_nsamples": 32, "calibration_batch_size": 8, **options}}
    return Path(olivine.run(workflow(tmp, model, passes, text)).output_dir)


def _nll(lp: Any, windows: Any) -> float:
    return float(-lp[:, :-1].gather(-1, windows[:, 1:, None]).mean())


def test_slicegpt_at_sparsity_zero_is_the_original(tmp_path: Path, trained_llama: Path,
                                                   texts: dict[str, Path]) -> None:
    """Measured max abs diff of log-probs 2e-6; bound 1e-4."""
    out = _slice(tmp_path, trained_llama, texts["calibration"], sparsity=0.0)
    windows = window_ids(trained_llama, texts["heldout"], limit=8)
    diff = (torch_log_probs(out, windows) - torch_log_probs(trained_llama, windows)).abs().max()
    assert float(diff) < 1e-4, float(diff)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "phi3"])
def test_slicegpt_keeps_other_shapes_at_sparsity_zero(tmp_path: Path, trained_llama: Path,
                                                      texts: dict[str, Path], kind: str) -> None:
    """Biased q/k/v (qwen2), per-head q/k norms (qwen3), packed qkv and gate_up (phi3): random
    weights, sparsity 0 keeps the log-probs (measured 1e-6, bound 1e-4); 0.25 shrinks them."""
    import json

    source = random_model(kind, tmp_path / "in", trained_llama)
    windows = window_ids(trained_llama, texts["heldout"], limit=2)
    same = _slice(tmp_path / "zero", source, texts["calibration"], sparsity=0.0)
    diff = (torch_log_probs(same, windows) - torch_log_probs(source, windows)).abs().max()
    assert float(diff) < 1e-4, float(diff)
    sliced = _slice(tmp_path / "quarter", source, texts["calibration"], sparsity=0.25)
    assert json.loads((sliced / "config.json").read_text())["hidden_size"] == 72
    assert torch_log_probs(sliced, windows).isfinite().all()


@pytest.mark.quality
def test_slicegpt_slices_converts_and_stays_close(tmp_path: Path, trained_llama: Path,
                                                  texts: dict[str, Path]) -> None:
    import json

    import olivine

    windows = window_ids(trained_llama, texts["heldout"])
    reference = torch_log_probs(trained_llama, windows)
    results = {}
    for sparsity, hidden in ((0.125, 56), (0.25, 48)):
        out = _slice(tmp_path / str(sparsity), trained_llama, texts["calibration"], sparsity=sparsity)
        config = json.loads((out / "config.json").read_text())
        assert config["hidden_size"] == hidden and config["head_dim"] == 16
        lp = torch_log_probs(out, windows)
        results[sparsity] = (kl(reference, lp), math.exp(_nll(lp, windows)))
        if sparsity == 0.25:
            built = olivine.run(workflow(tmp_path / "mb", out, {
                "m": {"type": "ModelBuilder", "precision": "fp32"}}))
            ort = ort_log_probs(Path(built.output_dir), windows)
            assert float((ort - lp).abs().max()) < 2e-3
    base_ppl = math.exp(_nll(reference, windows))
    record_quality("slicegpt KL x1e3 and perplexity", base_ppl=base_ppl,
                   kl_125=results[0.125][0], ppl_125=results[0.125][1],
                   kl_25=results[0.25][0], ppl_25=results[0.25][1])
    # measured (calibration seeds 42, 0, 1; final_orientation random or pca): perplexity 85.3
    # before; KL x1e3 2.32-2.45 and perplexity 85.6-86.0 at 0.125; KL 8.6-10.5 and perplexity
    # 86.9-87.2 at 0.25. Slicing the same dimensions without the PCA rotation gives KL 73 and
    # 160 (perplexity 95 and 97): the bounds below are far from that.
    assert results[0.125][0] < 5.0 and results[0.25][0] < 20.0, results
    assert results[0.125][0] < results[0.25][0]
    assert results[0.25][1] < 1.05 * base_ppl, (results, base_ppl)
