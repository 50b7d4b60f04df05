"""``olivine optimize`` schedules the passes Olive 0.13's ``olive optimize`` does.

The table ``olive_0_13_optimize_schedules.json`` is Olive's own answer for 736 flag
combinations (made by ``scripts/olive_optimize_schedules.py`` in a venv with olive-ai 0.13.0);
each case is parsed by olivine's ``optimize`` parser and scheduled by olivine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from olivine.errors import UsageError

TABLE = Path(__file__).with_name("olive_0_13_optimize_schedules.json")


def _plain(value: Any) -> Any:
    """Olive writes some booleans as the strings "true"/"false"; compare them as booleans."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


def _parser() -> argparse.ArgumentParser:
    from olivine_modelbuilder.optimize_cli import configure_optimize

    parser = argparse.ArgumentParser()
    configure_optimize(parser)
    return parser


def test_schedule_matches_olive_for_every_case() -> None:
    from olivine_modelbuilder.optimize_schedule import Flags, schedule

    table = json.loads(TABLE.read_text(encoding="utf-8"))
    parser = _parser()
    wrong = []
    for case in table["cases"]:
        olive = table["answers"][case["answer"]]
        args = parser.parse_args(["-m", "model", *case["argv"]])
        label = f"{case['model']} {' '.join(case['argv'])}"
        try:
            got = schedule(Flags.of(args), hf=case["model"] == "hf")
        except UsageError as exc:
            if "error" not in olive:
                wrong.append(f"{label}: olivine refused ({exc}), Olive schedules "
                             f"{[n for n, _ in olive['passes']]}")
            continue
        if "error" in olive:
            wrong.append(f"{label}: Olive refuses ({olive['error']}), olivine schedules "
                         f"{list(got.passes)}")
            continue
        if list(got.passes.items()) != [tuple(p) for p in _plain(olive["passes"])]:
            wrong.append(f"{label}: olivine {json.dumps(got.passes)}\n   Olive {olive['passes']}")
        if (got.systems, got.target, got.calibration_data) != (
                olive["systems"], olive["target"], olive["calibration_data"]):
            wrong.append(f"{label}: systems {got.systems} {got.target} vs Olive "
                         f"{olive['systems']} {olive['target']}")
    assert len(table["cases"]) > 700
    assert not wrong, f"{len(wrong)} cases differ:\n" + "\n".join(wrong[:10])


@pytest.mark.parametrize(("argv", "flag"), [
    (["--provider", "CPUExecutionProvider", "--device", "gpu"], "--device gpu"),
    (["--enable_aot"], "--enable_aot"),
    (["--provider", "QNNExecutionProvider", "--enable_aot"], "--qnn_env_path"),
    (["--provider", "OpenVINOExecutionProvider", "--use_qdq_format"], "--use_qdq_format"),
    (["--extra_mb_options", "int4_is_symmetric"], "--extra_mb_options"),
    (["--surgeries"], "--surgeries"),
    (["--provider", "QNNExecutionProvider", "--dim_param", "batch", "--dim_value", "one"],
     "--dim_value"),
])
def test_bad_combinations_name_the_flag(argv: list[str], flag: str) -> None:
    from olivine_modelbuilder.optimize_schedule import Flags, schedule

    args = _parser().parse_args(["-m", "model", *argv])
    with pytest.raises(UsageError, match=flag):
        schedule(Flags.of(args), hf=True)


def test_surgeries_in_several_values_are_all_scheduled() -> None:
    from olivine_modelbuilder.optimize_schedule import Flags, schedule

    args = _parser().parse_args(["-m", "m", "--surgeries", "RemoveRopeMultiCache,InferShapes",
                                 "RemoveShapes"])
    passes = schedule(Flags.of(args), hf=True).passes
    assert [s["surgeon"] for s in passes["graph_surgeries"]["surgeries"]] == [
        "RemoveRopeMultiCache", "InferShapes", "RemoveShapes"]
