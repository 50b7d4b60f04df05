"""``olivine generate-model-package``: Olive 0.13's package layout from output folders.

Checked once against Olive on two ModelBuilder outputs of the tiny Qwen2 (a ``cpu`` and a
``gpu`` variant): the same 14 files, byte-identical but for ``manifest.json``'s producer
(``olivine`` and its version instead of ``olive-ai``) and the package name (the folder's).
Here the sources are olivine run outputs (the hello model through ``Scale``) with the
genai_config.json that ModelBuilder wrote for the tiny Qwen2 (``data/genai_config.json``).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from olivine_testutil import HELLO_MODEL

DATA = Path(__file__).parent / "data"


def source(root: Path, name: str, provider: list[Any], context: int) -> Path:
    """An olivine output folder with a genai_config naming its model for ``provider``."""
    import olivine

    out = root / name
    olivine.run({"input_model": {"type": "ONNXModel", "model_path": str(HELLO_MODEL)},
                 "passes": {"s": {"type": "Scale", "factor": 3.0}}, "output_dir": str(out),
                 "cache_dir": str(root / "cache"), "log_severity_level": 3})
    genai = json.loads((DATA / "genai_config.json").read_text())
    genai["model"]["decoder"]["session_options"]["provider_options"] = provider
    genai["model"]["context_length"] = context
    (out / "genai_config.json").write_text(json.dumps(genai, indent=4))
    (out / "tokenizer.json").write_text('{"version": "1.0"}')
    return out


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def ort_out(model: Path) -> Any:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {i.name: np.full([d if isinstance(d, int) else 1 for d in i.shape], 0.5, np.float32)
            for i in sess.get_inputs()}
    return sess.run(None, feed)[0]


def test_two_variants(tmp_path: Path, cli: Any) -> None:
    import numpy as np

    cpu = source(tmp_path, "cpu", [], 256)
    gpu = source(tmp_path, "gpu", [{"cuda": {"enable_cuda_graph": "0"}}], 128)
    code, out, err = cli("generate-model-package", "-s", str(cpu), "-s", str(gpu), "-o",
                         str(tmp_path / "pkg"), "--model_version", "2.1")
    assert code == 0, err
    pkg = tmp_path / "pkg.ortpackage"
    assert f"Model package generated at {pkg}" in out
    files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert files == [
        "configs/genai_config.json", "configs/run.json", "configs/summary.txt",
        "configs/tokenizer.json", "manifest.json",
        "models/decoder/cpu/genai_config_overlay.json", "models/decoder/cpu/model.onnx",
        "models/decoder/cpu/model.onnx.data", "models/decoder/gpu/genai_config_overlay.json",
        "models/decoder/gpu/model.onnx", "models/decoder/gpu/model.onnx.data",
        "models/decoder/metadata.json"]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("schema_version", "package_name", "package_version",
                                     "components", "configs_dir")} == {
        "schema_version": 1, "package_name": "pkg", "package_version": "2.1",
        "components": ["decoder"], "configs_dir": "configs"}
    assert manifest["producer"]["task"] == "text_generation"
    metadata = json.loads((pkg / "models/decoder/metadata.json").read_text())
    assert metadata == {"schema_version": 1, "component_name": "decoder", "variants": {
        "cpu": {"ep": "CPUExecutionProvider"}, "gpu": {"ep": "CUDAExecutionProvider"}}}
    base = json.loads((pkg / "configs/genai_config.json").read_text())
    assert "filename" not in base["model"]["decoder"] and "context_length" not in base["model"]
    assert base["model"]["decoder"]["component"] == "decoder"
    for variant in (cpu, gpu):
        folder = pkg / "models/decoder" / variant.name
        merged = merge_patch(base, json.loads((folder / "genai_config_overlay.json").read_text()))
        merged["model"]["decoder"].pop("component")
        want = json.loads((variant / "genai_config.json").read_text())
        assert merged == want  # base + overlay is the variant's own config again
        np.testing.assert_array_equal(ort_out(folder / "model.onnx"), ort_out(variant / "model.onnx"))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no staging folder left


def test_bad_input(tmp_path: Path, cli: Any) -> None:
    cpu = source(tmp_path, "cpu", [], 256)
    code, _, err = cli("generate-model-package", "-s", str(tmp_path / "nope"), "-o", str(tmp_path / "p"))
    assert code == 2 and "--source" in err and "no such folder" in err
    code, _, err = cli("generate-model-package", "-s", str(HELLO_MODEL), "-o", str(tmp_path / "p"))
    assert code == 2 and "genai_config.json" in err
    (tmp_path / "p.ortpackage").mkdir()
    (tmp_path / "p.ortpackage" / "old.txt").write_text("x")
    code, _, err = cli("generate-model-package", "-s", str(cpu), "-o", str(tmp_path / "p"))
    assert code == 2 and "--output_path" in err and "not an empty folder" in err
    twin = tmp_path / "other" / "cpu"
    shutil.copytree(cpu, twin)
    code, _, err = cli("generate-model-package", "-s", str(cpu), "-s", str(twin), "-o",
                       str(tmp_path / "q"))
    assert code == 2 and "used twice" in err
    genai = json.loads((cpu / "genai_config.json").read_text())
    genai["model"]["decoder"]["filename"] = "../../etc/passwd"
    (twin / "genai_config.json").write_text(json.dumps(genai))
    code, _, err = cli("generate-model-package", "-s", str(twin), "-o", str(tmp_path / "r"))
    assert code == 2 and "not a safe relative path" in err
    code, out, _ = cli("generate-model-package", "-s", str(cpu), "-o", str(tmp_path / "d"), "--dry_run")
    assert code == 0 and "models/decoder/cpu/" in out and not (tmp_path / "d.ortpackage").exists()
