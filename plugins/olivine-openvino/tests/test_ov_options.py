"""Olive's option names and checks of the OpenVINO passes: a mistake is a config error (exit 2)
naming the key, before anything runs. Runs in every env (no openvino needed to validate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import cli_main as main

PASSES = ("OpenVINOOptimumConversion", "OpenVINOConversion", "OpenVINOIoUpdate",
          "OpenVINOEncapsulation", "OpenVINOQuantization", "OpenVINOQuantizationWithAccuracy",
          "OpenVINOWeightCompression")


def _run(tmp_path: Path, capsys: Any, passes: dict[str, Any], model: dict[str, Any] | None = None,
         **extra: Any) -> tuple[int, str]:
    wf = {"input_model": model or {"type": "HfModel", "model_path": "Qwen/Qwen2.5-0.5B"},
          "passes": passes, "output_dir": "out", **extra}
    cfg = tmp_path / "wf.json"
    cfg.write_text(json.dumps(wf))
    capsys.readouterr()
    code = main(["run", "--config", str(cfg), "--dry-run"])
    return code, capsys.readouterr().err


def test_every_pass_is_listed_with_olive_options(capsys: Any) -> None:
    assert main(["passes"]) == 0
    listing = capsys.readouterr().out
    for name in PASSES:
        assert name in listing
    assert main(["passes", "OpenVINOQuantization"]) == 0
    text = capsys.readouterr().out
    for option in ("data_config", "model_type", "preset", "ignored_scope", "ignored_scope_type",
                   "target_device", "transform_fn", "validation_func", "max_drop", "drop_type",
                   "extra_configs", "reuse_cache", "user_script", "script_dir"):
        assert option in text, option


@pytest.mark.parametrize(("passes", "fragment"), [
    ({"c": {"type": "OpenVINOOptimumConversion", "ov_quant_config": {"weight_fromat": "int4"}}},
     "ov_quant_config.weight_fromat"),
    ({"c": {"type": "OpenVINOOptimumConversion", "ov_quant_config": {"weight_format": "int3"}}},
     "weight_format"),
    ({"c": {"type": "OpenVINOOptimumConversion", "extra_args": {"taks": "text-generation"}}},
     "extra_args.taks"),
    ({"c": {"type": "OpenVINOOptimumConversion", "ov_quant_config": {"group_size": 64}}},
     "needs weight_format"),
    ({"c": {"type": "OpenVINOOptimumConversion", "staticc": True}}, "staticc"),
    ({"c": {"type": "OpenVINOOptimumConversion"},
      "u": {"type": "OpenVINOIoUpdate", "static": True}}, "input_shapes"),
    ({"c": {"type": "OpenVINOOptimumConversion"},
      "e": {"type": "OpenVINOEncapsulation", "ov_version": "2024.6"}}, "ov_version"),
    ({"c": {"type": "OpenVINOOptimumConversion"},
      "e": {"type": "OpenVINOEncapsulation", "target_device": "tpu"}}, "target_device"),
    ({"c": {"type": "OpenVINOOptimumConversion"},
      "w": {"type": "OpenVINOWeightCompression", "compress_config": {"mode": "int4_sym",
                                                                     "grup_size": 64}}},
     "compress_config.grup_size"),
    ({"c": {"type": "OpenVINOOptimumConversion"},
      "w": {"type": "OpenVINOWeightCompression", "ignored_scope": ["a"]}}, "ignored_scope_type"),
    ({"c": {"type": "OpenVINOConversion", "extra_configs": {"inputs": [1]}}},
     "extra_configs.inputs"),
])
def test_mistakes_are_config_errors(tmp_path: Path, capsys: Any, passes: dict[str, Any],
                                    fragment: str) -> None:
    code, err = _run(tmp_path, capsys, passes)
    assert code == 2, err
    assert fragment in err
    assert "Traceback" not in err


def test_quantization_needs_its_data_config(tmp_path: Path, capsys: Any) -> None:
    code, err = _run(tmp_path, capsys, {"c": {"type": "OpenVINOOptimumConversion"},
                                        "q": {"type": "OpenVINOQuantization"}})
    assert code == 2 and "data_config" in err
    code, err = _run(tmp_path, capsys, {"c": {"type": "OpenVINOOptimumConversion"},
                                        "q": {"type": "OpenVINOQuantization", "data_config": "x"}})
    assert code == 2 and "'x'" in err


def test_openvino_model_input_reads_an_ir_folder(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "ir").mkdir()
    code, err = _run(tmp_path, capsys, {"u": {"type": "OpenVINOIoUpdate"}},
                     model={"type": "OpenVINOModel", "model_path": str(tmp_path / "ir")})
    assert code == 2 and "input_model.model_path" in err and ".xml" in err
    (tmp_path / "ir" / "m.xml").write_text("<net/>")
    (tmp_path / "ir" / "m.bin").write_bytes(b"")
    code, err = _run(tmp_path, capsys, {"u": {"type": "OpenVINOIoUpdate"}},
                     model={"type": "OpenVINOModel", "model_path": str(tmp_path / "ir"),
                            "model_atributes": {}})
    assert code == 2 and "model_atributes" in err
