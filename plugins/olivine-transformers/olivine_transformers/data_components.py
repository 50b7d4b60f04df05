"""The data components that need a tokenizer: HuggingfaceContainer's pre-processing and the
transformers dummy-data containers, registered through ``register_data_components``.

Names and parameters are Olive's. transformers is imported when a component runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from olivine import UsageError
from olivine.data import DataContainerSpec
from olivine_transformers.data_media import (
    audio_classification_pre_process,
    speech_transcription_pre_process,
    vision_vqa_dataloader,
    vision_vqa_pre_process,
)
from olivine_transformers.data_textgen import text_generation_huggingface_pre_process

#: Olive's seq-length spellings, in the order they are read
LENGTH_KEYS = ("max_length", "seq_length", "max_seq_len")


class TokenizedDataset:
    """Tokenized samples: item ``i`` is ``(inputs, label)``, inputs a dict of int64 arrays."""

    def __init__(self, features: dict[str, Any], labels: list[Any] | None, texts: list[Any],
                 source: str) -> None:
        self.features = features
        self.labels = labels
        self.texts = texts
        self.source = source

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        label = self.labels[index] if self.labels is not None else 0
        return {k: v[index] for k, v in self.features.items()}, label


def _texts(dataset: Any, input_cols: Sequence[str], label_col: str | None, limit: int | None,
           where: str, default_label: str | None = None) -> tuple[list[Any], list[Any] | None, str]:
    rows = list(dataset)
    source = str(getattr(dataset, "source", "the dataset"))
    if rows and not isinstance(rows[0], Mapping):
        raise UsageError(f"{where}: the dataset's items are {type(rows[0]).__name__}, not rows of "
                         "columns; tokenizing pre-processing needs rows (a load_dataset of files)")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    missing = [c for c in input_cols if c not in columns]
    if rows and missing:
        raise UsageError(f"{where}: {source} has no column {missing[0]!r} (columns: "
                         f"{', '.join(columns)}); set pre_process_data_config.input_cols")
    if label_col is None and default_label and default_label in columns:
        label_col = default_label  # Olive's huggingface_pre_process labels from "label"
    if label_col and rows and label_col not in columns:
        raise UsageError(f"{where}: {source} has no label column {label_col!r} (columns: "
                         f"{', '.join(columns)}); set pre_process_data_config.label_col")
    texts: list[Any] = []
    labels: list[Any] = []
    for row in rows:
        values = [row.get(c) for c in input_cols]
        if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        texts.append(str(values[0]) if len(values) == 1 else tuple(str(v) for v in values[:2]))
        if label_col:
            labels.append(row.get(label_col))
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise UsageError(f"yields no samples: {source} has no non-empty "
                         f"{'/'.join(input_cols)} values" + (" (max_samples is 0)" if limit == 0 else ""))
    return texts, (labels if label_col else None), source


def _tokenizer(model_name: str | None, trust_remote_code: bool | None) -> Any:
    from olivine_transformers.data import load_tokenizer

    return load_tokenizer(None, model_name)


def _tokenize(texts: list[Any], tokenizer: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    from olivine_transformers.data import TEXT_INPUT_NAMES

    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token  # causal LM tokenizers have no pad token
    max_length = next((int(kwargs[k]) for k in LENGTH_KEYS if kwargs.get(k) is not None), 128)
    options = {"padding": kwargs.get("padding", "max_length"),
               "truncation": kwargs.get("truncation", True), "max_length": max_length,
               "add_special_tokens": kwargs.get("add_special_tokens", True),
               "is_split_into_words": kwargs.get("is_split_into_words", False),
               "return_tensors": "np"}
    if texts and isinstance(texts[0], tuple):
        enc = tokenizer([t[0] for t in texts], [t[1] for t in texts], **options)
    else:
        enc = tokenizer(list(texts), **options)
    return {k: v.astype("int64") for k, v in enc.items() if k in TEXT_INPUT_NAMES}


def _pre_process(dataset: Any, model_name: str | None, input_cols: Sequence[str] | str | None,
                 label_col: str | None, max_samples: int | None, trust_remote_code: bool | None,
                 kwargs: dict[str, Any], component: str,
                 default_label: str | None = None) -> TokenizedDataset:
    unknown = set(kwargs) - {*LENGTH_KEYS, "padding", "truncation", "add_special_tokens",
                             "is_split_into_words", "batched", "align_labels",
                             "model_config_path", "task"}
    if unknown:
        raise UsageError(f"pre_process_data_config: {component} takes no option "
                         f"{sorted(unknown)[0]!r}")
    cols = [input_cols] if isinstance(input_cols, str) else list(input_cols or ["text"])
    texts, labels, source = _texts(dataset, cols, label_col, max_samples, "the data", default_label)
    features = _tokenize(texts, _tokenizer(model_name, trust_remote_code), kwargs)
    return TokenizedDataset(features, labels, texts, source)


def huggingface_pre_process(dataset: Any, model_name: str | None = None,
                            input_cols: Sequence[str] | None = None, label_col: str | None = None,
                            max_samples: int | None = None, trust_remote_code: bool | None = None,
                            **kwargs: Any) -> TokenizedDataset:
    """Tokenize ``input_cols`` (two make sentence pairs) with ``model_name``'s tokenizer.

    Defaults: ``input_cols`` ``["text"]``, ``max_length`` 128, ``padding`` ``max_length``;
    ``label_col`` gives each sample its label (as in Olive, a ``label`` column by default;
    data without one has no labels).
    """
    return _pre_process(dataset, model_name, input_cols, label_col, max_samples,
                        trust_remote_code, kwargs, "huggingface_pre_process", default_label="label")


def tokenizer_pre_process(dataset: Any, model_name: str | None = None,
                          input_cols: Sequence[str] | None = None, max_samples: int | None = None,
                          trust_remote_code: bool | None = None, label_col: str | None = None,
                          **kwargs: Any) -> TokenizedDataset:
    """Tokenize ``input_cols`` (feature extraction); labels only when ``label_col`` is given."""
    return _pre_process(dataset, model_name, input_cols, label_col, max_samples,
                        trust_remote_code, kwargs, "tokenizer_pre_process")


def ner_huggingface_preprocess(dataset: Any, model_name: str, input_cols: Sequence[str] | str,
                               label_col: str = "label", max_samples: int | None = None,
                               trust_remote_code: bool | None = None, padding: Any = True,
                               truncation: bool = True, is_split_into_words: bool = True,
                               add_special_tokens: bool = False, batched: bool = True,
                               task: str | None = None) -> TokenizedDataset:
    """Tokenize pre-split words (``input_cols``) and align ``label_col``'s word tags to tokens.

    As Olive: a word's first token keeps its tag, its later tokens take the ``I-`` tag
    (an odd ``B-`` id plus one), special tokens and padding get 0; rows are padded to the
    longest one (``padding`` true).
    """
    import numpy as np

    where = "pre_process_data_config (ner_huggingface_preprocess)"
    cols = [input_cols] if isinstance(input_cols, str) else list(input_cols)
    rows = list(dataset)[:max_samples] if max_samples is not None else list(dataset)
    source = str(getattr(dataset, "source", "the dataset"))
    for col in (*cols, label_col):
        if rows and not all(isinstance(r, Mapping) and col in r for r in rows):
            raise UsageError(f"{where}: {source} has no column {col!r} in every row")
    if not rows:
        raise UsageError(f"yields no samples: {source} has no rows ({where})")
    tokenizer = _tokenizer(model_name, trust_remote_code)
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    columns = [[list(r[c]) if is_split_into_words else r[c] for r in rows] for c in cols]
    enc = tokenizer(*[c for c in columns if c], padding=padding, truncation=truncation,
                    is_split_into_words=is_split_into_words, add_special_tokens=add_special_tokens)
    labels = []
    for i, row in enumerate(rows):
        tags = [int(t) for t in row[label_col]]
        aligned: list[int] = []
        current = None
        for word in enc.word_ids(i):
            if word != current:  # a new word (or the first special/padding token after one)
                current = word
                aligned.append(0 if word is None else tags[word])
            elif word is None:
                aligned.append(0)
            else:  # a later piece of the same word: B-XXX (odd) becomes I-XXX
                aligned.append(tags[word] + 1 if tags[word] % 2 == 1 else tags[word])
        labels.append(np.asarray(aligned, np.int64))
    features = {k: [np.asarray(v, np.int64) for v in vals] for k, vals in enc.items()}
    texts = [" ".join(map(str, r[cols[0]])) for r in rows]
    return TokenizedDataset(features, labels, texts, source)


def _logits(output_data: Any) -> Any:
    if isinstance(output_data, Mapping):
        for key in ("logits", "last_hidden_state"):
            if key in output_data:
                return output_data[key]
        raise UsageError("post-processing: the model output has no logits or last_hidden_state")
    return getattr(output_data, "logits", output_data)


def text_classification_post_process(output_data: Any, **kwargs: Any) -> Any:
    """Predicted class ids: argmax over the last axis of the logits."""
    import numpy as np

    logits = _logits(output_data)
    if hasattr(logits, "argmax") and not isinstance(logits, np.ndarray):
        return logits.argmax(dim=-1)
    return np.asarray(logits).argmax(axis=-1)


def ner_post_process(output_data: Any, **kwargs: Any) -> Any:
    """Predicted tag ids per token: argmax over the last axis of the logits."""
    return text_classification_post_process(output_data)


def text_generation_post_process(output_data: Any, **kwargs: Any) -> Any:
    """The logits (or last hidden state) of the output."""
    return _logits(output_data)


def transformers_dummy_dataset(data_dir: str | None = None, model_name: str | None = None,
                               seq_len: int = 128, past_seq_len: int = 128, max_seq_len: int = 1024,
                               model_framework: str = "ONNX", use_fp16: bool = False,
                               shared_kv: bool = False, generative: bool = False,
                               ort_past_key_name: str = "past_key_values.<id>.key",
                               ort_past_value_name: str = "past_key_values.<id>.value",
                               trust_remote_code: bool | None = None, max_samples: int = 32,
                               use_step: bool = False,
                               ignore_input_fields: list[str] | None = None) -> list[Any]:
    """Dummy inputs for a transformers model: token ids, mask, positions, and a past KV cache.

    Layer, head and size counts come from ``model_name``'s config; without one (or for an
    encoder) only ``input_ids``/``attention_mask``/``token_type_ids`` are made.
    """
    import numpy as np

    cfg = _config(model_name, trust_remote_code)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    heads = int(getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    architectures = getattr(cfg, "architectures", None) or []
    decoder = bool(getattr(cfg, "is_decoder", False) or any(
        "CausalLM" in a or "LMHeadModel" in a for a in architectures))
    past = past_seq_len if decoder else 0
    total = past + seq_len
    # one sample, without the batch axis: the dataloader adds it (batch_size)
    inputs: dict[str, Any] = {"input_ids": np.ones((seq_len,), np.int64),
                              "attention_mask": np.ones((total,), np.int64)}
    if decoder:
        inputs["position_ids"] = np.arange(past, total, dtype=np.int64)
        head_dim = int(getattr(cfg, "head_dim", 0) or (hidden // max(
            int(getattr(cfg, "num_attention_heads", 1) or 1), 1)))
        dtype = np.float16 if use_fp16 else np.float32
        for i in range(layers):
            shape = (heads, past, head_dim)
            inputs[ort_past_key_name.replace("<id>", str(i))] = np.zeros(shape, dtype)
            inputs[ort_past_value_name.replace("<id>", str(i))] = np.zeros(shape, dtype)
        if use_step:
            inputs["step"] = np.int64(past)
    else:
        inputs["token_type_ids"] = np.zeros((seq_len,), np.int64)
    for name in ignore_input_fields or []:
        inputs.pop(name, None)
    return [(inputs, 0)] * int(max_samples)


def _config(model_name: str | None, trust_remote_code: bool | None) -> Any:
    if not model_name:
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_name, trust_remote_code=bool(trust_remote_code))
    except (OSError, ValueError) as exc:
        raise UsageError(f"transformers dummy data: cannot read the config of {model_name!r}: "
                         f"{exc}") from None


def _dummy_variant(seq_len: int, past_seq_len: int, max_seq_len: int) -> Callable[..., Any]:
    def component(data_dir: str | None = None, model_name: str | None = None, seq_len: int = seq_len,
                  past_seq_len: int = past_seq_len, max_seq_len: int = max_seq_len,
                  model_framework: str = "ONNX", use_fp16: bool = False, shared_kv: bool = False,
                  generative: bool = False,
                  ort_past_key_name: str = "past_key_values.<id>.key",
                  ort_past_value_name: str = "past_key_values.<id>.value",
                  trust_remote_code: bool | None = None, max_samples: int = 32,
                  use_step: bool = False, ignore_input_fields: list[str] | None = None) -> list[Any]:
        return transformers_dummy_dataset(
            data_dir, model_name, seq_len, past_seq_len, max_seq_len, model_framework, use_fp16,
            shared_kv, generative, ort_past_key_name, ort_past_value_name, trust_remote_code,
            max_samples, use_step, ignore_input_fields)

    component.__doc__ = f"transformers_dummy_dataset with seq_len {seq_len}, past_seq_len {past_seq_len}."
    return component


_FILL = {"load_dataset_config": ("model_name", "trust_remote_code")}
CONTAINERS = (
    DataContainerSpec("TransformersDummyDataContainer",
                      {"load_dataset": "transformers_dummy_dataset"}, fill=_FILL),
    DataContainerSpec("TransformersPromptDummyDataContainer",
                      {"load_dataset": "transformers_prompt_dummy_dataset"}, fill=_FILL),
    DataContainerSpec("TransformersTokenDummyDataContainer",
                      {"load_dataset": "transformers_token_dummy_dataset",
                       "dataloader": "dataloader_with_ignored_batch_fields"}, fill=_FILL),
)


def register_all(register: Callable[..., None]) -> None:
    """Register every component and container of this module."""
    register("pre_process_data", huggingface_pre_process)
    register("pre_process_data", tokenizer_pre_process)
    register("pre_process_data", text_generation_huggingface_pre_process)
    register("pre_process_data", ner_huggingface_preprocess)
    register("pre_process_data", speech_transcription_pre_process)
    register("pre_process_data", audio_classification_pre_process)
    register("pre_process_data", vision_vqa_pre_process)
    register("post_process_data", ner_post_process)
    register("dataloader", vision_vqa_dataloader)
    register("post_process_data", text_classification_post_process)
    register("post_process_data", text_generation_post_process)
    register("load_dataset", transformers_dummy_dataset)
    register("load_dataset", _dummy_variant(8, 0, 2048), "transformers_prompt_dummy_dataset")
    register("load_dataset", _dummy_variant(1, 8, 2048), "transformers_token_dummy_dataset")
    for spec in CONTAINERS:
        register("data_container", spec)
