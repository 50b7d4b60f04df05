"""A user's mistakes in QuaRot and SliceGPT configs: exit 2 with a message naming the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rot_helpers import workflow

Cli = Callable[..., tuple[int, str, str]]


def _run(cli: Cli, write_config: Callable[..., Path], wf: dict[str, Any]) -> tuple[int, str]:
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(("step", "expected"), [
    ({"type": "QuaRot", "rotate_mod": "random"}, "rotate_mod"),
    ({"type": "QuaRot", "rotate_mode": "cayley"}, "rotate_mode"),
    ({"type": "SliceGPT", "calibration_data_config": "calib", "sparsity": 1.0}, "sparsity"),
    ({"type": "SliceGPT", "sparsity": 0.1}, "calibration_data_config"),
    ({"type": "SliceGPT", "calibration_data_config": "nope", "sparsity": 0.1}, "nope"),
    ({"type": "SliceGPT", "calibration_data_config": "calib", "final_orientation": "svd"},
     "final_orientation"),
])
def test_bad_options_are_config_errors(tmp_path: Path, cli: Cli, write_config: Callable[..., Path],
                                       trained_llama: Path, texts: dict[str, Path],
                                       step: dict[str, Any], expected: str) -> None:
    code, err = _run(cli, write_config, workflow(tmp_path, trained_llama, {"s": step}, texts["calibration"]))
    assert code == 2 and expected in err, err


def test_layernorm_models_are_refused(tmp_path: Path, cli: Cli, write_config: Callable[..., Path],
                                      trained_llama: Path, texts: dict[str, Path]) -> None:
    """OPT (LayerNorm) is refused by both passes before running, as Olive's QuaRot refuses it."""
    import json

    opt = tmp_path / "opt"  # the refusal comes from config.json, before any weight is read
    opt.mkdir()
    (opt / "config.json").write_text(json.dumps({"model_type": "opt", "hidden_size": 32,
                                                 "architectures": ["OPTForCausalLM"]}))
    code, err = _run(cli, write_config, workflow(tmp_path / "q", opt, {"q": {"type": "QuaRot"}}))
    assert code == 2 and "LayerNorm" in err and "QuaRot" in err, err
    code, err = _run(cli, write_config, workflow(tmp_path / "s", opt, {"s": {
        "type": "SliceGPT", "calibration_data_config": "calib", "sparsity": 0.25}},
        texts["calibration"]))
    assert code == 2 and "OPT is not supported yet" in err, err


def test_unknown_calibration_options_are_errors(tmp_path: Path, cli: Cli,
                                                write_config: Callable[..., Path],
                                                trained_llama: Path, texts: dict[str, Path]) -> None:
    wf = workflow(tmp_path, trained_llama, {"s": {"type": "SliceGPT", "calibration_data_config": "calib",
                                                  "sparsity": 0.25}}, texts["calibration"],
                  strategy="join-random")
    code, err = _run(cli, write_config, wf)
    assert code == 2 and "join-random" in err, err


def test_widths_without_a_hadamard_matrix_ask_for_random(tmp_path: Path, cli: Cli,
                                                        write_config: Callable[..., Path]) -> None:
    """Hidden size 52 (neither Sylvester nor Paley gives order 52 here): a config error naming
    rotate_mode, before any weight is read; with rotate_mode random it is accepted."""
    import json

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 52,
                                                   "num_attention_heads": 2, "head_dim": 64}))
    code, err = _run(cli, write_config, workflow(tmp_path / "h", model, {"q": {"type": "QuaRot"}}))
    assert code == 2 and "hidden size is 52" in err and "rotate_mode 'random'" in err, err
    code, _, err = cli("run", "--config", str(write_config(workflow(
        tmp_path / "r", model, {"q": {"type": "QuaRot", "rotate_mode": "random"}}), "r.json")),
        "--dry-run")
    assert code == 0, err


@pytest.mark.parametrize("n", [1, 2, 12, 20, 28, 36, 40, 44, 60, 64, 80, 96, 104, 108, 140, 768, 896])
def test_hadamard_matrices_are_orthogonal(n: int) -> None:
    """Orders m x 2^k of LLM widths (896 = 28 x 32, 3072 = 12 x 256, 5120 = 20 x 256, head
    sizes 64, 80, 96, 128) all get one."""
    import torch

    from olivine_rotate.hadamard import hadamard

    h = hadamard(n)
    assert h.shape == (n, n) and bool(((h == 1) | (h == -1)).all())
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))
