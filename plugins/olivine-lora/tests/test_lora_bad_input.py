"""Bad input gets a message that says what is wrong and a non-zero exit code (2: the user's)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lora_helpers import DATA, LORA_STEP, TEMPLATE, data_config, variant_step, workflow

Cli = Callable[..., tuple[int, str, str]]


def _finetune(cli: Cli, model: Path, tmp: Path, *extra: str) -> tuple[int, str, str]:
    return cli("finetune", "-m", str(model), "-o", str(tmp / "out"), "--cache_dir",
               str(tmp / "cache"), "--max_steps", "2", "--log_level", "3", *extra)


def test_empty_data_file(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(empty),
                             "--text_template", TEMPLATE)
    assert code == 2
    assert f"data file '{empty}' is empty: it has no rows" in err
    assert not (tmp_path / "out").exists()


def test_template_names_a_missing_column(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA),
                             "--text_template", "Q: {question}\nA: {response}")
    assert code == 2
    assert "text_template names column 'question', which" in err
    assert "its columns: instruction, response" in err


def test_template_column_missing_in_one_row(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    rows = DATA.read_text().splitlines()[:5]
    rows[3] = json.dumps({"instruction": "Hello?"})
    data = tmp_path / "ragged.jsonl"
    data.write_text("\n".join(rows) + "\n")
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(data),
                             "--text_template", TEMPLATE)
    assert code == 2
    assert "which row 4 of" in err and "that row's columns: instruction" in err


def test_no_text_column_without_template(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA))
    assert code == 2
    assert "has no text column" in err and "text_template" in err
    assert "its columns: instruction, response" in err


def test_target_modules_that_match_nothing(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA),
                             "--text_template", TEMPLATE, "--target_modules", "q_projj,v_proj")
    assert code == 2
    assert "target_modules: 'q_projj' matches no linear layer" in err
    assert "did you mean 'q_proj'?" in err
    for layer in ("q_proj", "k_proj", "gate_proj", "down_proj"):
        assert layer in err.split("its linear layers:")[1]
    assert "lm_head" not in err


def test_target_modules_checked_by_the_pass_too(cli: Cli, base_model: Path, tmp_path: Path,
                                                write_json: Callable[[dict, Path], Path]) -> None:
    step = {**LORA_STEP, "target_modules": ["attention"]}
    config = write_json(workflow(tmp_path, base_model, {"lora": step}), tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2
    assert "step 'lora' (pass LoRA) failed: target_modules: 'attention' matches no linear" in err
    assert "q_proj (model.layers.0.self_attn.q_proj)" in err


def test_bad_data_formats(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(bad))
    assert code == 2 and "not JSON lines" in err
    odd = tmp_path / "rows.xlsx"
    odd.write_text("x")
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(odd))
    assert code == 2 and "unknown format '.xlsx'" in err
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(tmp_path / "none.csv"))
    assert code == 2 and "does not exist" in err
    code, _, err = _finetune(cli, base_model, tmp_path)
    assert code == 2 and "give the data: --data_files" in err
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA),
                             "--text_template", "{instruction", "--eval_split", "0.1")
    assert code == 2 and "text_template" in err
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA),
                             "--text_template", TEMPLATE, "--eval_split", "1.5")
    assert code == 2 and "--eval_split" in err


def test_config_problems_are_reported_together(cli: Cli, base_model: Path, tmp_path: Path,
                                               write_json: Callable[[dict, Path], Path]) -> None:
    step = {**LORA_STEP, "lora_r": 0}
    config = write_json(workflow(tmp_path, base_model, {"lora": step}), tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2
    assert "passes.lora.lora_r: must be at least 1, got 0" in err
    step = {**LORA_STEP, "lora_dropout": 1.5}
    config = write_json(workflow(tmp_path, base_model, {"lora": step}), tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2
    assert "passes.lora.lora_dropout: must be from 0 up to (not including) 1, got 1.5" in err
    step = {**LORA_STEP, "num_train_epochs": 2}
    config = write_json(workflow(tmp_path, base_model, {"lora": step}), tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "give max_steps or num_train_epochs, not both" in err
    step = {**LORA_STEP, "training_args": {"output_dir": "x"}}
    config = write_json(workflow(tmp_path, base_model, {"lora": step}), tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "training_args.output_dir: not allowed" in err


def test_qlora_without_bitsandbytes(cli: Cli, base_model: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    write_json: Callable[[dict, Path], Path]) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    code, _, err = _finetune(cli, base_model, tmp_path, "--data_files", str(DATA),
                             "--text_template", TEMPLATE, "--method", "qlora")
    assert code == 2
    assert "bitsandbytes, which is not installed" in err
    assert "pip install 'olivine-lora[qlora]'" in err
    config = write_json(workflow(tmp_path, base_model, {"q": variant_step("QLoRA")}),
                        tmp_path / "wf.json")
    assert cli("run", "--config", str(config), "--dry-run")[0] == 0  # maybe for another machine
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and "QLoRA quantizes the base model to 4 bits with bitsandbytes" in err


def test_adapter_for_another_base_is_refused(cli: Cli, base_model: Path, other_adapter: Path,
                                             exported: Path, tmp_path: Path,
                                             write_json: Callable[[dict, Path], Path]) -> None:
    from olivine import UsageError
    from olivine_lora.onnx_adapter import check_adapter_file

    # converting it for the exported model
    code, _, err = cli("convert-adapters", "-a", str(other_adapter), "-m", str(exported), "-o",
                       str(tmp_path / "x.onnx_adapter"))
    assert code == 2
    assert "does not fit the model: it was trained for a different base model" in err
    assert "has 32 in-features in the adapter but 64 in the model" in err
    assert not (tmp_path / "x.onnx_adapter").exists()
    # exporting the base with it
    code, _, err = cli("generate-adapter", "-m", str(base_model), "-a", str(other_adapter), "-o",
                       str(tmp_path / "gen"), "--log_level", "3")
    assert code == 2
    assert "does not fit base model" in err and "trained for a different model" in err
    assert "model.layers.0.mlp.down_proj maps 128 -> 64 features in" in err
    assert "but the adapter's matrices are for 64 -> 32" in err
    # merging it (the pass, in a workflow)
    wf = workflow(tmp_path, base_model, {"merge": {"type": "MergeAdapterWeights"}},
                  adapter_path=str(other_adapter), data=[])
    code, _, err = cli("run", "--config", str(write_json(wf, tmp_path / "wf.json")))
    assert code == 2
    assert "step 'merge' (pass MergeAdapterWeights) failed: adapter" in err
    assert "trained for a different model" in err
    # an adapter file converted without a model to check against
    loose = tmp_path / "loose.onnx_adapter"
    assert cli("convert-adapters", "-a", str(other_adapter), "-o", str(loose))[0] == 0
    with pytest.raises(UsageError, match=r"made for a different base model: .* is \[32, 4\] but "
                                         r"the model takes \[64, r\]"):
        check_adapter_file(exported, loose)


def test_not_an_adapter(cli: Cli, exported: Path, tmp_path: Path) -> None:
    code, _, err = cli("convert-adapters", "-a", str(tmp_path), "-o", str(tmp_path / "a.onnx_adapter"))
    assert code == 2 and "is not a peft adapter folder (no adapter_config.json" in err
    code, _, err = cli("convert-adapters", "-a", str(tmp_path / "nope"), "-o", str(tmp_path))
    assert code == 2 and "no such folder" in err


def test_data_readers(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from olivine.config import DataConfig
    from olivine_lora.data import TextOptions, load_rows, render_texts

    rows = [{"instruction": "a?", "response": "b."}, {"instruction": "c?", "response": "d."}]
    (tmp_path / "d.csv").write_text("instruction,response\na?,b.\nc?,d.\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("first line\n\nsecond line\n")
    options = TextOptions(text_template=TEMPLATE)
    for name in ("d.csv", "d.json", "d.parquet"):
        dc = DataConfig(**data_config(files=[str(tmp_path / name)]))
        assert render_texts(load_rows(dc), options) == [
            "### Question: a?\n### Answer: b.", "### Question: c?\n### Answer: d."], name
    dc = DataConfig(**data_config(files=[str(tmp_path / "d.txt")]))
    assert render_texts(load_rows(dc), TextOptions()) == ["first line", "second line"]
    dc = DataConfig(name="x", load_dataset_config={"data_name": "csv",
                                                   "data_files": str(tmp_path / "d.csv")})
    assert len(load_rows(dc).rows) == 2


def test_hub_dataset_needs_datasets(cli: Cli, base_model: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from olivine import UsageError
    from olivine.config import DataConfig
    from olivine_lora.data import load_rows

    monkeypatch.setitem(sys.modules, "datasets", None)
    dc = DataConfig(name="hub", load_dataset_config={"data_name": "someone/phrases"})
    with pytest.raises(UsageError, match="names a Hugging Face hub dataset, which needs the "
                                         "datasets package"):
        load_rows(dc)
    code, out, _ = _finetune(cli, base_model, tmp_path, "-d", "someone/phrases", "--text_field",
                             "phrase", "--dry_run")
    assert code == 0  # a hub dataset is not read before the run
    assert json.loads(out)["data_configs"][0]["load_dataset_config"] == {
        "data_name": "someone/phrases", "split": "train"}


def test_extract_adapters_needs_lora_weights(cli: Cli, base_model: Path, tmp_path: Path,
                                             write_json: Callable[[dict, Path], Path]) -> None:
    pytest.importorskip("onnxruntime_genai")
    wf = workflow(tmp_path, base_model, {"builder": {"type": "ModelBuilder", "precision": "fp32"},
                                         "extract": {"type": "ExtractAdapters"}}, data=[])
    code, _, err = cli("run", "--config", str(write_json(wf, tmp_path / "wf.json")))
    assert code == 2
    assert "has no LoRA weights to extract: build it from a model with an adapter" in err
