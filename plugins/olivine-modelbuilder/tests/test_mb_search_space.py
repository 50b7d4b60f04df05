"""ModelBuilder declares its search space; SEARCHABLE_VALUES uses it."""

from __future__ import annotations

from typing import Any

from olivine import validate


def test_searchable_values_expand_to_the_declared_space(tmp_path: Any) -> None:
    wf = validate({
        "input_model": {"type": "HfModel", "model_path": "Qwen/Qwen2.5-0.5B-Instruct"},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "int4",
                               "int4_block_size": "SEARCHABLE_VALUES",
                               "int4_is_symmetric": "SEARCHABLE_VALUES"}},
        "evaluators": {"e": {"metrics": [{"name": "size", "type": "size_on_disk",
                                          "sub_types": [{"name": "bytes"}]}]}},
        "evaluator": "e", "search_strategy": {"sampler": "sequential"},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")})
    space = {d.label: d.values for d in wf.dimensions()}
    assert space == {"builder.int4_block_size": (32, 64, 128),
                     "builder.int4_is_symmetric": (True, False)}
