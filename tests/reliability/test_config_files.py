"""Issue 12, item 8: config files are read as written.

YAML follows YAML 1.2 (``2e-4`` is a number, ``yes`` a string); JSON comments and
trailing commas are removed without touching strings or moving error positions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from olivine_testutil import HELLO_MODEL, olivine_subprocess


def _plan(config: Path) -> str:
    proc = olivine_subprocess("run", "--config", str(config), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_yaml_numbers_and_words_follow_yaml_1_2(tmp_path: Path) -> None:
    config = tmp_path / "wf.yaml"
    config.write_text(f"""\
input_model: {{type: ONNXModel, model_path: {HELLO_MODEL}}}
passes:
  small: {{type: Scale, factor: 2e-4, note: yes}}
  big: {{type: Scale, factor: 1E+2, note: on, pad: 0o17}}
  plain: {{type: Scale, factor: 1.5e-2, note: 1_000, pad: 017}}
output_dir: {tmp_path / 'out'}
cache_dir: {tmp_path / 'cache'}
""")
    plan = _plan(config)
    assert "factor = 0.0002" in plan and 'note = "yes"' in plan, plan
    assert "factor = 100.0" in plan and 'note = "on"' in plan and "pad = 15" in plan, plan
    assert "factor = 0.015" in plan and 'note = "1_000"' in plan and "pad = 17" in plan, plan


def test_yaml_bad_number_type_still_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "wf.yaml"
    config.write_text(f"input_model: {{type: ONNXModel, model_path: {HELLO_MODEL}}}\n"
                      "passes: {s: {type: Scale, factor: 2e-4x}}\n")
    proc = olivine_subprocess("run", "--config", str(config), "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "passes.s.factor: expected number" in proc.stderr, proc.stderr


def test_json_comments_leave_strings_alone(tmp_path: Path) -> None:
    config = tmp_path / "wf.json"
    config.write_text(f"""{{
  // a comment, as in Olive's docs
  "input_model": {{"type": "ONNXModel", "model_path": "{HELLO_MODEL}"}},
  "passes": {{
    "s": {{"type": "Scale", "note": "a, }}b // not a comment /* nor this */",}}, /* trailing, */
  }},
  "workflow_id": "x,]",
  "output_dir": "{tmp_path / 'out'}",
  "cache_dir": "{tmp_path / 'cache'}",
}}
""")
    plan = _plan(config)
    assert 'note = "a, }b // not a comment /* nor this */"' in plan, plan
    assert "workflow x,] " in plan, plan


def test_json_error_lines_count_multi_line_comments(tmp_path: Path) -> None:
    config = tmp_path / "wf.json"
    config.write_text('{\n  /* one\n     two\n     three */\n  "passes": {},\n  "output_dir": "o" "x"\n}\n')
    proc = olivine_subprocess("run", "--config", str(config))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "wf.json: not valid JSON: Expecting ',' delimiter at line 6, column 21" in proc.stderr, \
        proc.stderr
    config.write_text('{"passes": {}, /* never closed\n}\n')
    proc = olivine_subprocess("run", "--config", str(config))
    assert proc.returncode == 2 and "comment is not closed (opened at line 1, column 16)" in proc.stderr


def test_a_key_written_twice_is_refused_not_dropped(tmp_path: Path) -> None:
    """JSON and YAML readers keep the last of two equal keys; olivine says so instead."""
    cases = {
        "wf.json": f'{{"input_model": {{"type": "ONNXModel", "model_path": "{HELLO_MODEL}"}},\n'
                   '"passes": {"s": {"type": "Scale", "factor": 2.0, "factor": 3.0}}}\n',
        "wf.yaml": f"input_model: {{type: ONNXModel, model_path: {HELLO_MODEL}}}\n"
                   "passes:\n  s:\n    type: Scale\n    factor: 2.0\n    factor: 3.0\n",
    }
    for name, text in cases.items():
        config = tmp_path / name
        config.write_text(text)
        proc = olivine_subprocess("run", "--config", str(config), "--dry-run")
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "'factor' appears twice" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert name in proc.stderr
    # a YAML merge key may still be overridden: that is not a repeated key
    config = tmp_path / "merge.yaml"
    config.write_text(f"input_model: {{type: ONNXModel, model_path: {HELLO_MODEL}}}\n"
                      "base: &scale {type: Scale, factor: 2.0}\n"
                      "passes:\n  s:\n    <<: *scale\n    factor: 3.0\n"
                      f"output_dir: {tmp_path / 'out'}\ncache_dir: {tmp_path / 'cache'}\n")
    proc = olivine_subprocess("run", "--config", str(config), "--dry-run")
    # 'base' is not a workflow key, so the plan is refused for that, not for the merge
    assert "appears twice" not in proc.stderr, proc.stderr


def test_a_number_that_is_not_finite_is_refused(tmp_path: Path) -> None:
    """1e400 reads as infinity; no option wants it, and run.json could not hold it as JSON."""
    for name, value in (("wf.json", "1e400"), ("nan.json", "NaN"), ("wf.yaml", ".inf")):
        config = tmp_path / name
        if name.endswith(".json"):
            config.write_text(f'{{"input_model": {{"type": "ONNXModel", "model_path": "{HELLO_MODEL}"}},'
                              f'"passes": {{"s": {{"type": "Scale", "factor": {value}}}}}}}')
        else:
            config.write_text(f"input_model: {{type: ONNXModel, model_path: {HELLO_MODEL}}}\n"
                              f"passes: {{s: {{type: Scale, factor: {value}}}}}\n")
        proc = olivine_subprocess("run", "--config", str(config), "--dry-run")
        assert proc.returncode == 2, (name, proc.stderr)
        assert "passes.s.factor" in proc.stderr and "finite number" in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists()


def test_a_number_that_is_not_finite_is_refused_from_python(tmp_path: Path) -> None:
    """``olivine.run`` with a dict: the same check as for a file, before anything is written."""
    import math

    import olivine
    from olivine.errors import UsageError

    for value in (math.inf, -math.inf, math.nan):
        config = {"input_model": {"type": "ONNXModel", "model_path": str(HELLO_MODEL)},
                  "passes": {"s": {"type": "Scale", "factor": value}},
                  "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}
        with pytest.raises(UsageError, match=r"passes\.s\.factor .*finite number"):
            olivine.run(config)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
