"""Olive's speech, audio-classification and vision-VQA data components, on local files.

Audio cells may be a path to a ``.wav`` file (relative paths: to the working directory,
then to the data file's folder), a ``{"array", "sampling_rate"}``/``{"path"}``/``{"bytes"}``
mapping (a hub dataset's decoded audio), or an array of samples (taken as already at the
wanted rate). WAV files are read with ``soundfile`` when it is installed, else with the
standard library (PCM 8/16/24/32-bit). Audio at another rate is resampled by linear
interpolation (Olive's ``datasets.Audio`` uses a band-limited resampler: values differ
slightly). Images may be PIL images or paths (opened with Pillow).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from random import Random
from typing import Any

from olivine import UsageError


def select_rows(rows: list[Any], limit: float | None, max_samples: int | None,
                seed: int) -> list[Any]:
    """Olive's sampling: ``limit`` (else ``max_samples``) >= 1 keeps the first N rows,
    0 < limit < 1 a random fraction (sorted, ``seed``), 0/None all rows."""
    effective = limit if limit is not None else (max_samples or 0)
    if not effective:
        return rows
    if 0 < effective < 1:
        n = max(1, int(len(rows) * effective))
        picked = sorted(Random(seed).sample(range(len(rows)), min(n, len(rows))))
        return [rows[i] for i in picked]
    if effective < 0:
        raise UsageError(f"limit/max_samples must not be negative, not {effective}")
    return rows[:int(effective)]


def _rows(dataset: Any, columns: Sequence[str], where: str) -> tuple[list[Mapping[str, Any]], str]:
    rows = list(dataset)
    source = str(getattr(dataset, "source", "the dataset"))
    if rows and not isinstance(rows[0], Mapping):
        raise UsageError(f"{where}: the dataset's items are {type(rows[0]).__name__}, not rows "
                         "of columns (a load_dataset of files or a hub dataset)")
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    for col in columns:
        if rows and col not in present:
            raise UsageError(f"{where}: {source} has no column {col!r} (columns: "
                             f"{', '.join(map(str, present))})")
    return rows, source


def _base_dirs(source: str) -> list[Path]:
    dirs = [Path.cwd()]
    for part in source.split(","):
        parent = Path(part.strip().split(" [")[0]).expanduser().parent
        if parent.is_dir():
            dirs.append(parent)
    return dirs


def read_wav(data: str | Path | bytes, where: str) -> tuple[Any, int]:
    """Samples (float32, mono: channels averaged) and the sample rate of a WAV file or bytes."""
    import numpy as np

    name = "<bytes>" if isinstance(data, bytes) else str(data)
    handle: Any = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        try:
            samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
            return samples.mean(axis=1).astype(np.float32), int(rate)
        except Exception as exc:  # soundfile raises its own error types
            raise UsageError(f"{where}: cannot read audio {name!r}: {exc}") from None
    import wave

    try:
        with wave.open(handle, "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise UsageError(f"{where}: cannot read audio {name!r} as PCM WAV ({exc}); other formats "
                         "need soundfile (pip install soundfile)") from None
    if width == 1:
        values = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        values = np.where(ints >= 1 << 23, ints - (1 << 24), ints).astype(np.float32) / float(1 << 23)
    else:
        scale = float(1 << (8 * width - 1))
        values = np.frombuffer(raw, f"<i{width}").astype(np.float32) / scale
    return values.reshape(-1, channels).mean(axis=1).astype(np.float32), int(rate)


def resample(samples: Any, rate: int, target: int) -> Any:
    """``samples`` at ``rate`` Hz resampled to ``target`` Hz (linear interpolation)."""
    import numpy as np

    if rate == target or len(samples) == 0:
        return np.asarray(samples, np.float32)
    n = max(1, round(len(samples) * target / rate))
    positions = np.arange(n, dtype=np.float64) * rate / target
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def load_audio(cell: Any, sample_rate: int, bases: list[Path], where: str) -> Any:
    """One audio cell as float32 samples at ``sample_rate``."""
    import numpy as np

    if isinstance(cell, Mapping):
        if cell.get("array") is not None:
            rate = int(cell.get("sampling_rate") or sample_rate)
            return resample(np.asarray(cell["array"], np.float32), rate, sample_rate)
        if cell.get("bytes"):
            return resample(*read_wav(cell["bytes"], where), sample_rate)
        cell = cell.get("path")
    if isinstance(cell, str | Path):
        path = Path(cell).expanduser()
        found = next((b / path for b in bases if (b / path).is_file()), None) \
            if not path.is_absolute() else (path if path.is_file() else None)
        if found is None:
            raise UsageError(f"{where}: audio file {str(cell)!r} not found (relative paths are "
                             f"read from {', '.join(str(b) for b in bases)})")
        return resample(*read_wav(found, where), sample_rate)
    if hasattr(cell, "get_all_samples"):  # datasets 4's torchcodec AudioDecoder
        decoded = cell.get_all_samples()
        data = decoded.data.numpy().mean(axis=0)
        return resample(data.astype(np.float32), int(decoded.sample_rate), sample_rate)
    try:
        return np.asarray(cell, np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: an audio cell is {type(cell).__name__}; give a .wav path, an "
                         "array of samples or {'array': ..., 'sampling_rate': ...}") from None


class SpeechTranscriptionDataset:
    """``(audio float32 samples, reference text)`` pairs; use batch_size 1 (lengths vary)."""

    def __init__(self, audio: list[Any], texts: list[Any], source: str) -> None:
        self.audio = audio
        self.texts = texts
        self.source = source

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        return self.audio[index], self.texts[index]

    @staticmethod
    def collate_fn(batch: Sequence[tuple[Any, Any]]) -> tuple[Any, list[Any]]:
        """One item: ``(audio[None], [text])``; more: lists of audios and texts (no padding)."""
        import numpy as np

        if len(batch) == 1:
            audio, text = batch[0]
            return np.expand_dims(audio, 0), [text]
        return [b[0] for b in batch], [b[1] for b in batch]


def speech_transcription_pre_process(dataset: Any, audio_col: str = "audio",
                                     text_col: str = "text", sample_rate: int = 16000,
                                     max_samples: int | None = None, limit: float | None = None,
                                     seed: int = 42, task: str | None = None,
                                     model_name: str | None = None,
                                     trust_remote_code: bool | None = None
                                     ) -> SpeechTranscriptionDataset:
    """Audio (resampled to ``sample_rate``) and reference text pairs for WER evaluation.

    ``limit`` >= 1 keeps the first N rows, 0 < ``limit`` < 1 a random fraction (``seed``);
    ``max_samples`` is read when ``limit`` is not given (Olive's deprecated spelling).
    """
    where = "pre_process_data_config (speech_transcription_pre_process)"
    rows, source = _rows(dataset, (audio_col, text_col), where)
    rows = select_rows(rows, limit, max_samples, seed)
    bases = _base_dirs(source)
    audio = [load_audio(r[audio_col], int(sample_rate), bases, f"{where}, row {i}")
             for i, r in enumerate(rows)]
    return SpeechTranscriptionDataset(audio, [r[text_col] for r in rows], source)


class AudioClassificationDataset:
    """``({"input_values", "attention_mask"}, label)`` items from a feature extractor."""

    def __init__(self, features: list[dict[str, Any]], labels: list[Any], source: str) -> None:
        self.features = features
        self.labels = labels
        self.source = source

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        return dict(self.features[index]), self.labels[index]


def audio_classification_pre_process(dataset: Any, model_name: str, input_cols: list[str],
                                     label_col: str = "label", max_samples: int | None = None,
                                     trust_remote_code: bool | None = None,
                                     feature_extractor_args: dict[str, Any] | None = None,
                                     max_duration: float = 30, labels_to_filter: list[str] | None = None,
                                     batched: bool = True, task: str | None = None
                                     ) -> AudioClassificationDataset:
    """Features of ``input_cols[0]``'s audio by ``model_name``'s feature extractor, labels
    mapped to the model's ``label2id`` (names) and rows whose label is in
    ``labels_to_filter`` dropped; audio longer than ``max_duration`` seconds is truncated."""
    import numpy as np
    from transformers import AutoConfig, AutoFeatureExtractor

    where = "pre_process_data_config (audio_classification_pre_process)"
    cols = [input_cols] if isinstance(input_cols, str) else list(input_cols)
    if len(cols) != 1:
        raise UsageError(f"{where}: input_cols must name one audio column, not {cols}")
    rows, source = _rows(dataset, (cols[0], label_col), where)
    try:
        config = AutoConfig.from_pretrained(model_name, trust_remote_code=bool(trust_remote_code))
        extractor = AutoFeatureExtractor.from_pretrained(
            model_name, trust_remote_code=bool(trust_remote_code), **(feature_extractor_args or {}))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: cannot load the config/feature extractor of {model_name!r}: "
                         f"{exc}") from None
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    # a hub dataset's class-label ids are named (Olive aligns them with the model by name)
    names = (getattr(dataset, "class_names", None) or {}).get(label_col)
    if names:
        rows = [{**r, label_col: names[int(r[label_col])]} for r in rows]
    drop = {str(x) for x in labels_to_filter or []}
    rows = [r for r in rows if str(r[label_col]) not in drop]
    if max_samples is not None:
        rows = rows[:int(max_samples)]
    labels = []
    for i, row in enumerate(rows):
        label = row[label_col]
        if isinstance(label, str):
            if label not in label2id:
                raise UsageError(f"{where}: row {i}: label {label!r} is not one of the model's "
                                 f"labels ({', '.join(label2id)})")
            label = label2id[label]
        labels.append(int(label))
    rate = int(extractor.sampling_rate)
    bases = _base_dirs(source)
    features = []
    for i, row in enumerate(rows):
        samples = load_audio(row[cols[0]], rate, bases, f"{where}, row {i}")
        enc = extractor([samples], sampling_rate=rate, max_length=int(rate * max_duration),
                        truncation=True, return_attention_mask=True)
        features.append({k: np.asarray(v[0]) for k, v in enc.items()})
    return AudioClassificationDataset(features, labels, source)


class VisionVQADataset:
    """``({"image", "question", "system_prompt", "num_choices", "max_length"}, answer)`` items."""

    def __init__(self, rows: list[Mapping[str, Any]], image_col: str, question_col: str,
                 answer_col: str, options_col: str, system_prompt: str, max_length: int,
                 bases: list[Path], source: str) -> None:
        self.rows = rows
        self.image_col, self.question_col, self.answer_col = image_col, question_col, answer_col
        self.options_col, self.system_prompt, self.max_length = options_col, system_prompt, max_length
        self.bases = bases
        self.source = source

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, cell: Any, index: int) -> Any:
        if isinstance(cell, Mapping) and (cell.get("bytes") or cell.get("path")):
            cell = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
        if not isinstance(cell, str | Path | io.BytesIO):
            return cell  # a PIL image (hub datasets) or an array
        try:
            from PIL import Image
        except ImportError:
            raise UsageError("vision_vqa_pre_process: image paths need Pillow "
                             "(pip install pillow)") from None
        if isinstance(cell, io.BytesIO):
            return Image.open(cell)
        path = Path(cell).expanduser()
        found = path if path.is_absolute() else next(
            (b / path for b in self.bases if (b / path).is_file()), path)
        try:
            image = Image.open(found)
            image.load()
        except OSError as exc:
            raise UsageError(f"vision_vqa_pre_process, row {index}: cannot open image "
                             f"{str(cell)!r}: {exc}") from None
        return image

    def __getitem__(self, index: int) -> tuple[dict[str, Any], str]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        row = self.rows[index]
        question, answer = row[self.question_col], row[self.answer_col]
        choices = 0
        options = row.get(self.options_col) if self.options_col else None
        if isinstance(options, list | tuple) and options:
            choices = len(options)
            question = f"{question}\n" + "\n".join(f"{i + 1}. {o}" for i, o in enumerate(options))
        if isinstance(answer, list | tuple):
            answer = "|".join(str(a) for a in answer)
        if choices and str(answer).strip().lstrip("-").isdigit():
            answer = str(int(answer) + 1)  # 0-based option index -> the 1-based numbering
        return ({"image": self._image(row[self.image_col], index), "question": question,
                 "system_prompt": self.system_prompt, "num_choices": choices,
                 "max_length": self.max_length}, str(answer))

    @staticmethod
    def collate_fn(batch: Sequence[tuple[dict[str, Any], str]]) -> tuple[Any, list[str]]:
        """One item: ``(inputs, [answer])``; more: a list of inputs and a list of answers."""
        if len(batch) == 1:
            return batch[0][0], [batch[0][1]]
        return [b[0] for b in batch], [b[1] for b in batch]


def vision_vqa_pre_process(dataset: Any, image_col: str = "image", question_col: str = "question",
                           answer_col: str = "answer", options_col: str = "",
                           system_prompt: str = "", max_length: int = 4096,
                           max_samples: int | None = None, limit: float | None = None,
                           seed: int = 42, task: str | None = None, model_name: str | None = None,
                           trust_remote_code: bool | None = None) -> VisionVQADataset:
    """Image, question (options numbered from 1 and appended) and answer for VQA evaluation."""
    where = "pre_process_data_config (vision_vqa_pre_process)"
    rows, source = _rows(dataset, (image_col, question_col, answer_col), where)
    rows = select_rows(rows, limit, max_samples, seed)
    return VisionVQADataset(rows, image_col, question_col, answer_col, options_col, system_prompt,
                            int(max_length), _base_dirs(source), source)


def vision_vqa_dataloader(dataset: Any, batch_size: int = 1, **kwargs: Any) -> Any:
    """Batches collated with the dataset's ``collate_fn`` (torch's DataLoader when installed)."""
    from olivine.data import Batches

    collate = getattr(dataset, "collate_fn", None)
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        extra = set(kwargs) - {"drop_last"}
        if extra:
            raise UsageError(f"dataloader_config: {', '.join(sorted(extra))} need torch's "
                             "DataLoader (pip install torch)") from None
        return Batches(dataset, batch_size, collate_fn=collate, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, **kwargs)
