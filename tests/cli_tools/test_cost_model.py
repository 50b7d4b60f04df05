"""``olivine generate-cost-model`` writes Olive's csv, and ``CaptureSplitInfo`` splits by it.

``data/olive-cost-model-fp16.csv`` is Olive 0.13's output (``olive generate-cost-model -m
tiny-qwen2 -o olive-fp16.csv``, transformers 5.24) for the random tiny Qwen2 whose config is
``data/tiny-qwen2-config.json``; olivine reads only the config (the meta device).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
pytest.importorskip("transformers")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-qwen2"
    folder.mkdir()
    shutil.copy(DATA / "tiny-qwen2-config.json", folder / "config.json")
    return folder


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_same_csv_as_olive(tiny: Path, tmp_path: Path, cli: Any) -> None:
    import transformers

    code, out, err = cli("generate-cost-model", "-m", str(tiny), "-o", str(tmp_path / "c" / "cost"))
    assert code == 0, err
    written = tmp_path / "c" / "cost.csv"  # .csv appended, as Olive does
    assert f"Cost model written to {written}" in out
    assert "Total cost: 49728 bytes for fp16 precision." in out
    if transformers.__version__.split(".")[0] == "5":  # module names as the fixture's transformers
        assert written.read_text() == (DATA / "olive-cost-model-fp16.csv").read_text()
    # --test: Olive's 2-layer model of the same architecture (Olive 0.13 on a 4-layer copy of
    # the config wrote the same csv as for the 2-layer one)
    config = json.loads((tiny / "config.json").read_text())
    config.update(num_hidden_layers=4, layer_types=["full_attention"] * 4)
    (tmp_path / "four").mkdir()
    (tmp_path / "four" / "config.json").write_text(json.dumps(config))
    code, _, err = cli("generate-cost-model", "-m", str(tmp_path / "four"), "--test", "-o",
                       str(tmp_path / "test.csv"))
    assert code == 0, err
    assert (tmp_path / "test.csv").read_text() == written.read_text()
    code, _, err = cli("generate-cost-model", "-m", str(tiny), "-p", "int4", "-o",
                       str(tmp_path / "int4.csv"))
    assert code == 0, err
    fp16 = {r["module"]: r for r in rows(written)}
    for r in rows(tmp_path / "int4.csv"):  # whole bytes: a quarter of fp16's, rounded up
        assert int(r["num_bytes"]) == -(-int(fp16[r["module"]]["num_bytes"]) // 4)
        assert r["num_flops"] == fp16[r["module"]]["num_flops"]


def split_of(model: Path, tmp_path: Path, cost: Path, memory: int) -> dict[str, int]:
    import olivine

    result = olivine.run({"input_model": {"type": "HfModel", "model_path": str(model)},
                          "passes": {"split": {"type": "CaptureSplitInfo", "cost_model": str(cost),
                                               "memory": memory}},
                          "output_dir": str(tmp_path / f"out-{memory}"),
                          "cache_dir": str(tmp_path / "cache"), "log_severity_level": 3})
    return dict(result.output_model.attrs_dict()["split_assignments"])


def test_capture_split_info_follows_the_costs(tiny: Path, tmp_path: Path, cli: Any) -> None:
    cost = tmp_path / "cost.csv"
    assert cli("generate-cost-model", "-m", str(tiny), "-o", str(cost))[0] == 0
    table = {r["module"]: int(r["num_bytes"]) for r in rows(cost)}
    counts = {}
    for memory in (6144, 12288, 10**9):
        split = split_of(tiny, tmp_path, cost, memory)
        assert set(split) <= set(table)
        order = [m for m in table if m in split]
        assert [split[m] for m in order] == sorted(split[m] for m in order)  # contiguous, in order
        for index in set(split.values()):
            members = [m for m in order if split[m] == index]
            if len(members) > 1:  # a split over memory only when one module alone is larger
                assert sum(table[m] for m in members) <= memory, (memory, index, members)
        counts[memory] = len(set(split.values()))
    # measured: 10, 5 and 2 splits (with unlimited memory only the memory-/compute-bound
    # switches split)
    assert counts[6144] > counts[12288] > counts[10**9] > 1, counts


def test_bad_input(tmp_path: Path, cli: Any, tiny: Path) -> None:
    code, _, err = cli("generate-cost-model", "-m", str(tmp_path / "nope"))
    assert code == 2 and "--model_name_or_path" in err and "Traceback" not in err
    code, _, err = cli("generate-cost-model", "-m", str(tiny), "-t", "translation")
    assert code == 2 and "--task" in err
    with pytest.raises(SystemExit) as exc:
        cli("generate-cost-model", "-m", str(tiny), "-p", "int3")
    assert exc.value.code == 2
    code, out, _ = cli("generate-cost-model", "-m", str(tiny), "--dry_run", "-o",
                       str(tmp_path / "x.csv"))
    assert code == 0 and out.startswith("module,num_params") and not (tmp_path / "x.csv").exists()
