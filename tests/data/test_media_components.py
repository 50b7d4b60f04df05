"""Olive's speech, audio-classification, NER and vision-VQA components on local files.

Every input is written by the test: sine-wave WAV files, a PNG, a few tagged sentences,
and a word-piece tokenizer / wav2vec2 feature extractor saved locally (no hub).
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine.config.sections import DataConfig
from olivine.data import resolve
from olivine.errors import UsageError

pytest.importorskip("transformers")


def write_wav(path: Path, freq: float, rate: int, seconds: float, channels: int = 1) -> Path:
    """A 16-bit PCM sine wave of amplitude 0.5."""
    n = int(rate * seconds)
    wave_ = (0.5 * np.sin(2 * math.pi * freq * np.arange(n) / rate) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(wave_, channels).tobytes())
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(data: Path, pre: dict[str, Any], **sections: Any) -> Any:
    dc = DataConfig(name="d", type="HuggingfaceContainer",
                    load_dataset_config={"data_name": "json", "data_files": str(data)},
                    pre_process_data_config=pre, **sections)
    return resolve(dc)


def test_speech_transcription_reads_and_resamples_wav(tmp_path: Path) -> None:
    write_wav(tmp_path / "low.wav", 440.0, 8000, 0.5)          # resampled 8 kHz -> 16 kHz
    write_wav(tmp_path / "stereo.wav", 440.0, 16000, 0.25, channels=2)
    rows = [{"audio": "low.wav", "text": "hello"}, {"audio": "stereo.wav", "text": "world"},
            {"audio": str(tmp_path / "low.wav"), "text": "again"}]
    resolved = run(write_jsonl(tmp_path / "rows.jsonl", rows),
                   {"type": "speech_transcription_pre_process", "max_samples": 2})
    dataset = resolved.pre_process(resolved.load_dataset())
    assert len(dataset) == 2  # max_samples: the first rows
    audio, text = dataset[0]
    assert text == "hello" and audio.dtype == np.float32 and audio.shape == (8000,)
    t = np.arange(8000) / 16000
    # linear interpolation of a 440 Hz sine sampled at 8 kHz: measured max error 0.0075
    # (the last sample holds the last input value: no sample beyond it to interpolate to)
    assert np.abs(audio - 0.5 * np.sin(2 * math.pi * 440 * t))[:-1].max() < 0.02
    assert dataset[1][0].shape == (4000,) and dataset[1][1] == "world"
    batches = list(resolved.create_dataloader())  # Olive's default dataloader, batch_size 1
    assert tuple(batches[0][0].shape) == (1, 8000) and list(batches[0][1]) == ["hello"]
    single = dataset.collate_fn([dataset[0]])
    assert single[0].shape == (1, 8000) and single[1] == ["hello"]


def test_speech_limit_fraction_is_seeded_and_arrays_work(tmp_path: Path) -> None:
    rows = [{"audio": [0.1 * i] * 4, "text": f"t{i}"} for i in range(10)]
    data = write_jsonl(tmp_path / "arrays.jsonl", rows)
    pre = {"type": "speech_transcription_pre_process", "limit": 0.3, "seed": 5}
    picked = [run(data, pre).pre_process(run(data, pre).load_dataset()) for _ in range(2)]
    texts = [[d[i][1] for i in range(len(d))] for d in picked]
    assert len(texts[0]) == 3 and texts[0] == texts[1]
    assert texts[0] == sorted(texts[0], key=lambda s: int(s[1:]))  # Olive keeps the order
    assert picked[0][0][0].tolist() == pytest.approx([0.1 * int(texts[0][0][1:])] * 4)


def test_speech_missing_file_and_column_are_clear(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "r.jsonl", [{"audio": "nope.wav", "text": "x"}])
    resolved = run(data, {"type": "speech_transcription_pre_process"})
    with pytest.raises(UsageError, match=r"audio file 'nope\.wav' not found"):
        resolved.pre_process(resolved.load_dataset())
    resolved = run(data, {"type": "speech_transcription_pre_process", "text_col": "sentence"})
    with pytest.raises(UsageError, match="no column 'sentence'"):
        resolved.pre_process(resolved.load_dataset())


@pytest.fixture
def wav2vec2_extractor(tmp_path: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    folder = tmp_path / "w2v"
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True,
                             return_attention_mask=True).save_pretrained(str(folder))
    Wav2Vec2Config(label2id={"yes": 0, "no": 1, "up": 2},
                   id2label={0: "yes", 1: "no", 2: "up"}).save_pretrained(str(folder))
    return folder


def test_audio_classification_features_and_labels(tmp_path: Path, wav2vec2_extractor: Path) -> None:
    write_wav(tmp_path / "a.wav", 300.0, 16000, 0.5)
    write_wav(tmp_path / "b.wav", 600.0, 8000, 0.1)
    rows = [{"file": "a.wav", "label": "no"}, {"file": "b.wav", "label": "up"},
            {"file": "a.wav", "label": "yes"}]
    resolved = run(write_jsonl(tmp_path / "rows.jsonl", rows),
                   {"model_name": str(wav2vec2_extractor), "input_cols": ["file"],
                    "max_duration": 0.25, "labels_to_filter": ["yes"],
                    "task": "audio-classification"})
    assert resolved.components["pre_process_data"].name == "audio_classification_pre_process"
    assert resolved.components["post_process_data"].name == "text_classification_post_process"
    dataset = resolved.pre_process(resolved.load_dataset())
    assert len(dataset) == 2  # the "yes" row is filtered out
    (first, label0), (second, label1) = dataset[0], dataset[1]
    assert (label0, label1) == (1, 2)  # names mapped through the model's label2id
    assert first["input_values"].shape == (4000,)   # truncated to max_duration * 16 kHz
    assert second["input_values"].shape == (1600,)  # 0.1 s at 8 kHz, resampled
    assert abs(float(first["input_values"].mean())) < 1e-3  # do_normalize: zero mean, unit var
    assert float(first["input_values"].std()) == pytest.approx(1.0, abs=1e-2)
    assert first["attention_mask"].tolist() == [1] * 4000


def test_audio_classification_unknown_label(tmp_path: Path, wav2vec2_extractor: Path) -> None:
    write_wav(tmp_path / "a.wav", 300.0, 16000, 0.1)
    resolved = run(write_jsonl(tmp_path / "r.jsonl", [{"file": "a.wav", "label": "left"}]),
                   {"type": "audio_classification_pre_process",
                    "model_name": str(wav2vec2_extractor), "input_cols": ["file"]})
    with pytest.raises(UsageError, match="label 'left' is not one of the model's labels"):
        resolved.pre_process(resolved.load_dataset())


def test_ner_aligns_word_tags_to_tokens(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "##son", "lives", "in",
             "paris", "new", "york", "visited"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(
        str(tmp_path / "tok"))
    # conll-style ids: 0 O, 1 B-PER, 2 I-PER, 5 B-LOC, 6 I-LOC
    rows = [{"tokens": ["johnson", "lives", "in", "paris"], "ner_tags": [1, 0, 0, 5]},
            {"tokens": ["john", "visited", "new", "york"], "ner_tags": [1, 0, 5, 6]},
            {"tokens": ["paris"], "ner_tags": [5]}]
    resolved = run(write_jsonl(tmp_path / "ner.jsonl", rows),
                   {"model_name": str(tmp_path / "tok"), "input_cols": ["tokens"],
                    "label_col": "ner_tags", "task": "ner"})
    assert resolved.components["pre_process_data"].name == "ner_huggingface_preprocess"
    dataset = resolved.pre_process(resolved.load_dataset())
    inputs, labels = dataset[0]
    # "johnson" -> john ##son: the B-PER's second piece becomes I-PER; no [CLS]/[SEP]
    assert inputs["input_ids"].tolist() == [5, 6, 7, 8, 9]
    assert labels.tolist() == [1, 2, 0, 0, 5]
    # these ids, masks and labels are what Olive 0.13's ner_huggingface_preprocess gives for
    # the same rows and tokenizer (run once in Olive's venv)
    assert dataset[1][0]["input_ids"].tolist() == [5, 12, 10, 11, 0]
    assert dataset[1][1].tolist() == [1, 0, 5, 6, 0]  # padded to the longest row: label 0
    assert dataset[2][1].tolist() == [5, 0, 0, 0, 0]
    assert dataset[0][0]["token_type_ids"].tolist() == [0] * 5
    assert dataset[2][0]["attention_mask"].tolist() == [1, 0, 0, 0, 0]
    logits = np.zeros((1, 5, 7), np.float32)
    logits[0, np.arange(5), [1, 2, 0, 0, 5]] = 1.0
    assert resolved.post_process({"logits": logits}).tolist() == [[1, 2, 0, 0, 5]]


def test_vision_vqa_images_questions_and_dataloader(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    image_mod.new("RGB", (6, 4), (255, 0, 0)).save(tmp_path / "red.png")
    image_mod.new("RGB", (3, 5), (0, 255, 0)).save(tmp_path / "green.png")
    rows = [{"img": "red.png", "q": "What color?", "a": 0, "opts": ["red", "green"]},
            {"img": "green.png", "q": "Which?", "a": ["green", "lime"], "opts": []},
            {"img": "red.png", "q": "Third", "a": "x", "opts": []}]
    pre = {"image_col": "img", "question_col": "q", "answer_col": "a", "options_col": "opts",
           "system_prompt": "Reply with the option number", "limit": 2, "task": "vision-vqa"}
    resolved = run(write_jsonl(tmp_path / "vqa.jsonl", rows), pre)
    assert resolved.components["dataloader"].name == "vision_vqa_dataloader"
    dataset = resolved.pre_process(resolved.load_dataset())
    assert len(dataset) == 2
    inputs, answer = dataset[0]
    assert inputs["question"] == "What color?\n1. red\n2. green" and answer == "1"
    assert inputs["num_choices"] == 2 and inputs["max_length"] == 4096
    assert inputs["system_prompt"] == "Reply with the option number"
    assert inputs["image"].size == (6, 4) and inputs["image"].getpixel((0, 0)) == (255, 0, 0)
    assert dataset[1][1] == "green|lime" and dataset[1][0]["num_choices"] == 0
    batches = list(resolved.create_dataloader())
    assert len(batches) == 2 and batches[0][1] == ["1"] and batches[0][0]["question"].startswith("What")
    paired = run(tmp_path / "vqa.jsonl", pre, dataloader_config={"batch_size": 2})
    (inputs_list, answers), = list(paired.create_dataloader())
    assert len(inputs_list) == 2 and answers == ["1", "green|lime"]


def test_vision_vqa_missing_image_is_clear(tmp_path: Path) -> None:
    pytest.importorskip("PIL.Image")
    rows = [{"image": "gone.png", "question": "q", "answer": "a"}]
    resolved = run(write_jsonl(tmp_path / "v.jsonl", rows), {"type": "vision_vqa_pre_process"})
    dataset = resolved.pre_process(resolved.load_dataset())
    with pytest.raises(UsageError, match=r"cannot open image 'gone\.png'"):
        dataset[0]


def test_audio_classification_names_hub_class_ids(tmp_path: Path, wav2vec2_extractor: Path) -> None:
    """A hub dataset's class-label ids are mapped to the model's ids through their names."""
    from olivine.data.builtin import Rows
    from olivine_transformers.data_media import audio_classification_pre_process

    audio = {"array": np.zeros(1600, np.float32), "sampling_rate": 16000}  # datasets' decoded form
    rows = Rows([{"audio": audio, "label": 0}, {"audio": audio, "label": 2},
                 {"audio": audio, "label": 1}], "hub [test]",
                class_names={"label": ["up", "yes", "no"]})  # dataset order != model's
    dataset = audio_classification_pre_process(rows, str(wav2vec2_extractor), ["audio"],
                                               labels_to_filter=["yes"])
    assert [dataset[i][1] for i in range(len(dataset))] == [2, 1]  # up -> 2, no -> 1
