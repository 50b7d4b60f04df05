"""Run an Olive recipe end to end, as a user would, on a tiny local model and local data.

A recipe of ``../shared/olive-recipes`` is copied with its folder (user scripts, side files)
into a test's ``tmp_path``; the copy's workflow JSON is rewritten in these places only:

* ``input_model.model_path``: the hub id becomes a tiny local model of the same architecture;
* each ``data_configs`` entry that loads a hub dataset (``load_dataset_config.data_name``):
  ``data_name`` becomes ``json`` and ``data_files`` a local file with the same columns, under
  the recipe's own split name (``subset`` goes: it names a part of the hub dataset);
* ``load_dataset_config`` parameters of a user script's dataset component that name the hub
  model or dataset it loads itself (``data_params``, e.g. CLIP's ``model_name`` and
  ``dataset_name``) become the local ones;
* a calibrated pass that relies on Olive's default hub dataset (``gptq`` and
  ``SelectiveMixedPrecision`` ``kld_gradient`` without a ``data_config``; Olive then downloads
  wikitext-2) gets ``data_config`` naming one added local entry (``local_calibration``);
* an absolute ``output_dir`` / ``cache_dir`` is moved into the copy (relative ones already
  land there, as the run's working directory is the copy).

Everything else (passes, options, systems, engine keys) stays as the recipe has it, and
:func:`changed_paths` proves it. Then ``olivine run --config FILE`` runs from the copy's
folder, in a fresh process, exactly as the command line would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olivine_testutil import SHARED

RECIPES = SHARED / "olive-recipes"
#: Loaders that read local files (a data config naming one of these needs no hub).
LOCAL_LOADERS = {"json", "jsonl", "csv", "text", "txt", "parquet"}
#: The data_configs entry added for passes that would calibrate on Olive's hub default.
CALIBRATION_ENTRY = "local_calibration"


def recipes_root() -> Path:
    """The olive-recipes checkout, or a pytest skip (a clone of olivine alone has none)."""
    import pytest

    if not RECIPES.is_dir():
        pytest.skip(f"no olive-recipes checkout at {RECIPES} (a clone of olivine alone has none)")
    return RECIPES


def pass_sequence(workflow: Mapping[str, Any]) -> tuple[str, ...]:
    """The pass types of a workflow, in order (``passes`` as Olive's dict of name -> config)."""
    passes = workflow.get("passes") or {}
    configs = passes.values() if isinstance(passes, Mapping) else passes
    return tuple(str(c.get("type")) for c in configs if isinstance(c, Mapping))


def _needs_default_calibration(config: Mapping[str, Any]) -> bool:
    kind = str(config.get("type", "")).lower()
    has_data = any(config.get(k) for k in ("data_config", "data_files", "data_name"))
    if has_data:
        return False
    if kind == "gptq":
        return True
    return kind == "selectivemixedprecision" and config.get("algorithm") == "kld_gradient"


@dataclass
class PreparedRecipe:
    """A recipe copied into a test folder with its model and data swapped for local ones."""

    source: Path
    folder: Path
    config: Path
    original: dict[str, Any]
    workflow: dict[str, Any]
    log: list[str] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        """Where the run publishes its model (relative paths resolve in the copied folder)."""
        out = Path(str(self.workflow.get("output_dir") or "olivine-output"))
        return out if out.is_absolute() else self.folder / out


def prepare(recipe: str, tmp_path: Path, model_path: Path | str, dataset: Path | None = None,
            calibration: Path | None = None, calibration_windows: tuple[int, int] = (16, 64),
            data_params: dict[str, str] | None = None) -> PreparedRecipe:
    """Copy ``recipe`` (relative to the corpus) into ``tmp_path`` and point it at local things.

    ``dataset`` (a JSON-lines file) replaces every hub dataset of ``data_configs``;
    ``calibration`` (JSON lines with a ``text`` field) feeds the calibrated passes that would
    use Olive's hub default, ``calibration_windows`` = (max_samples, max_seq_len) of it.
    ``data_params`` replaces those ``load_dataset_config`` keys where a data config has them.
    """
    root = recipes_root()
    source = root / recipe
    folder = tmp_path / "recipe" / source.parent.name
    shutil.copytree(source.parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
    original = json.loads(source.read_text(encoding="utf-8"))
    workflow = json.loads(json.dumps(original))
    log: list[str] = []

    workflow["input_model"]["model_path"] = str(model_path)
    log.append("input_model.model_path")

    for i, entry in enumerate(workflow.get("data_configs") or []):
        load = entry.get("load_dataset_config")
        for key, value in (data_params or {}).items():
            if isinstance(load, dict) and key in load:
                load[key] = value
                log.append(f"data_configs[{i}].load_dataset_config.{key}")
        name = (load or {}).get("data_name")
        if not name or str(name).lower() in LOCAL_LOADERS:
            continue
        if dataset is None:
            raise ValueError(f"{recipe}: data_configs[{i}] loads hub dataset {name!r}; give dataset")
        split = str(load.get("split") or "train")
        load.pop("subset", None)
        load["data_name"] = "json"
        load["data_files"] = {split: [str(dataset)]}
        log.append(f"data_configs[{i}].load_dataset_config")

    passes = workflow.get("passes") or {}
    needing = [name for name, cfg in passes.items() if _needs_default_calibration(cfg)]
    if needing:
        if calibration is None:
            raise ValueError(f"{recipe}: passes {needing} calibrate on Olive's hub default; "
                             "give calibration")
        samples, seq_len = calibration_windows
        workflow.setdefault("data_configs", []).append({
            "name": CALIBRATION_ENTRY, "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(calibration),
                                    "split": "train"},
            "pre_process_data_config": {"max_samples": samples, "max_seq_len": seq_len}})
        log.append(f"data_configs[{CALIBRATION_ENTRY}]")
        for name in needing:
            passes[name]["data_config"] = CALIBRATION_ENTRY
            log.append(f"passes.{name}.data_config")

    for key, default in (("output_dir", "out"), ("cache_dir", "cache")):
        value = workflow.get(key)
        if value and Path(str(value)).is_absolute():
            workflow[key] = str(tmp_path / default)
            log.append(key)

    config = folder / source.name
    config.write_text(json.dumps(workflow, indent=2), encoding="utf-8")
    return PreparedRecipe(source, folder, config, original, workflow, log)


def _walk(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def changed_paths(prepared: PreparedRecipe) -> set[str]:
    """Every leaf key path whose value differs between the recipe and its rewritten copy."""
    before, after = dict(_walk(prepared.original)), dict(_walk(prepared.workflow))
    return {k for k in before.keys() | after.keys() if before.get(k, ...) != after.get(k, ...)}


def run(prepared: PreparedRecipe, timeout: float = 600, *extra: str) -> subprocess.CompletedProcess[str]:
    """``olivine run --config NAME`` in the copied folder, in a fresh process (as a user would)."""
    env = {k: v for k, v in os.environ.items() if k != "OLIVINE_CACHE_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "olivine", "run", "--config", prepared.config.name,
                           *extra], capture_output=True, text=True, env=env, cwd=prepared.folder,
                          timeout=timeout)


def run_ok(prepared: PreparedRecipe, timeout: float = 600) -> Path:
    """Run the recipe, fail the test with the tail of its log unless it exits 0; its output folder."""
    result = run(prepared, timeout)
    assert result.returncode == 0, (
        f"olivine run {prepared.source.relative_to(RECIPES)} exited {result.returncode}:\n"
        f"{result.stderr[-4000:]}\n{result.stdout[-2000:]}")
    assert prepared.output_dir.is_dir(), f"no output folder {prepared.output_dir}"
    return prepared.output_dir


def find_one(folder: Path, pattern: str) -> Path:
    """The single file matching ``pattern`` under ``folder`` (glob)."""
    found = sorted(folder.rglob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {folder}, found {found}"
    return found[0]


# -- checking the outputs -------------------------------------------------------------------------


def ort_session(path: Path) -> Any:
    """A one-thread CPU ONNX Runtime session of ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def genai_model(folder: Path) -> Any:
    """An onnxruntime-genai model of a built folder on the CPU (one intra-op thread), whatever
    execution provider the recipe built it for (a CUDA build's genai_config names CUDA)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": 1, "inter_op_num_threads": 1}}}}))
    config.clear_providers()
    return og.Model(config)


def genai_first_logits(folder: Path, ids: list[int]) -> Any:
    """onnxruntime-genai's logits after the prompt ``ids`` (the first generated token's)."""
    import numpy as np
    import onnxruntime_genai as og

    model = genai_model(folder)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    return np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)


def genai_greedy(folder: Path, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens from onnxruntime-genai: exactly ``new_tokens`` (EOS masked until then)."""
    import onnxruntime_genai as og

    model = genai_model(folder)
    params = og.GeneratorParams(model)
    total = len(ids) + new_tokens
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def torch_first_logits(model_dir: Path, ids: list[int]) -> Any:
    """The fp32 torch model's logits after the prompt ``ids``."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return np.asarray(logits, dtype=np.float64)


def relative_error(got: Any, want: Any) -> float:
    """``max|got - want| / max|want|``: a scale-free distance between two logit vectors."""
    import numpy as np

    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))
