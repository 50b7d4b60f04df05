"""Without Intel's stack (the default env): the passes are still listed, and a workflow using
one is a config error (exit 2) naming what to install."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import cli_main as main

if importlib.util.find_spec("openvino") is not None:
    pytest.skip("openvino is installed here (the openvino env)", allow_module_level=True)


def test_passes_listed_and_kind_registered(capsys: Any) -> None:
    assert main(["passes"]) == 0
    assert "OpenVINOWeightCompression" in capsys.readouterr().out
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["olivine-openvino"]["model_kinds"] == ["openvino"]


def test_workflow_is_a_config_error_naming_what_to_install(tmp_path: Path, capsys: Any) -> None:
    wf = {"input_model": {"type": "HfModel", "model_path": "Qwen/Qwen2.5-0.5B"},
          "passes": {"convert": {"type": "OpenVINOOptimumConversion",
                                 "ov_quant_config": {"weight_format": "int4"}},
                     "io": {"type": "OpenVINOIoUpdate"},
                     "encap": {"type": "OpenVINOEncapsulation", "target_device": "npu"}},
          "output_dir": str(tmp_path / "out")}
    cfg = tmp_path / "wf.json"
    cfg.write_text(json.dumps(wf))
    for extra in ([], ["--dry-run"]):
        capsys.readouterr()
        assert main(["run", "--config", str(cfg), *extra]) == 2
        err = capsys.readouterr().err
        assert "passes.convert" in err and "optimum-intel" in err
        assert "pip install 'olivine-openvino[openvino]'" in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
