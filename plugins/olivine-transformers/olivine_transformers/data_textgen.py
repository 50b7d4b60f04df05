"""``text_generation_huggingface_pre_process``: Olive's causal-LM corpus pre-processing.

The rows' text (a chat template, a formatting function, an f-string ``text_template`` or
the ``text_cols`` joined by spaces) is tokenized and cut into samples by ``strategy``:

- ``join``: every text, followed by ``joiner``'s tokens, in one stream cut into
  non-overlapping ``max_seq_len`` windows (a short tail is dropped);
- ``join-sliding-window``: windows ``stride`` tokens apart; the first
  ``max_seq_len - stride`` labels of each window are context (``-100``);
- ``join-random``: ``max_samples`` windows starting at random texts (``random_seed``);
- ``line-by-line``: one sample per text, truncated (and padded when ``pad_to_max_len``);
- ``line-by-line-random``: ``max_samples`` random texts.

Each sample is ``({"input_ids", "attention_mask"}, labels)`` with int64 arrays; labels are
the input ids with padding (and sliding-window context) set to ``-100``, as in Olive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from random import Random
from typing import Any

from olivine import UsageError

IGNORE_INDEX = -100
STRATEGIES = ("line-by-line", "line-by-line-random", "join", "join-random", "join-sliding-window")
WHERE = "pre_process_data_config (text_generation_huggingface_pre_process)"


class TextGenDataset:
    """Samples ``({"input_ids", "attention_mask"}, labels)``, int64 numpy arrays."""

    def __init__(self, inputs: list[dict[str, Any]], labels: list[Any], source: str) -> None:
        self.inputs = inputs
        self.labels = labels
        self.source = source

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        return dict(self.inputs[index]), self.labels[index]


def _check(strategy: str, stride: int | None, max_samples: int | None, random_seed: int | None,
           pad_to_max_len: bool, drop_short_sequences: bool, use_attention_mask: bool,
           padding_side: str, max_seq_len: int) -> None:
    if strategy not in STRATEGIES:
        raise UsageError(f"{WHERE}: strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if padding_side not in ("left", "right"):
        raise UsageError(f"{WHERE}: padding_side must be 'left' or 'right', not {padding_side!r}")
    if int(max_seq_len) < 1:
        raise UsageError(f"{WHERE}: max_seq_len must be at least 1, not {max_seq_len}")
    if pad_to_max_len and drop_short_sequences:
        raise UsageError(f"{WHERE}: pad_to_max_len and drop_short_sequences cannot both be true "
                         "(set pad_to_max_len: false to drop short sequences)")
    if strategy == "join-sliding-window":
        if stride is None:
            raise UsageError(f"{WHERE}: strategy join-sliding-window needs stride")
        if not 0 < int(stride) <= int(max_seq_len):
            raise UsageError(f"{WHERE}: stride must be between 1 and max_seq_len ({max_seq_len}), "
                             f"not {stride}")
    if "random" in strategy:
        if max_samples is None:
            raise UsageError(f"{WHERE}: strategy {strategy} needs max_samples")
        if random_seed is None:
            raise UsageError(f"{WHERE}: strategy {strategy} needs random_seed")
    if "join" not in strategy and pad_to_max_len and not use_attention_mask:
        raise UsageError(f"{WHERE}: pad_to_max_len is true but use_attention_mask is false; "
                         "padding needs the attention mask")


def _formatter(text_formatting_func: str | Callable[..., Any] | None, user_script: Any,
               script_dir: Any) -> Callable[..., Any] | None:
    if text_formatting_func is None or callable(text_formatting_func):
        return text_formatting_func
    if not user_script:
        raise UsageError(f"{WHERE}: text_formatting_func {text_formatting_func!r} names a function "
                         "of the data config's user_script, and there is none")
    from olivine import load_module

    module = load_module(str(user_script), script_dir, "data_configs.user_script")
    func = getattr(module, str(text_formatting_func), None)
    if not callable(func):
        raise UsageError(f"{WHERE}: user_script {str(user_script)!r} has no function "
                         f"{text_formatting_func!r} (text_formatting_func)")
    return func


def _text(row: Mapping[str, Any], tokenizer: Any, chat_template: bool | str | None,
          message_col: str, formatter: Callable[..., Any] | None, template: str | None,
          cols: Sequence[str], add_special_tokens: bool, index: int) -> str:
    try:
        if chat_template:
            return str(tokenizer.apply_chat_template(
                row[message_col], tokenize=False,
                chat_template=chat_template if isinstance(chat_template, str) else None))
        if formatter is not None:
            text = str(formatter(dict(row)))
        elif template:
            text = template.format(**row)
        else:
            text = " ".join(str(row[c]) for c in cols)
    except KeyError as exc:
        raise UsageError(f"{WHERE}: row {index} has no column {exc.args[0]!r} (columns: "
                         f"{', '.join(map(str, row))}); set text_cols, text_template or "
                         "message_col") from None
    if add_special_tokens:
        # Olive writes the tokens' text around the row; a tokenizer without one adds nothing
        text = f"{tokenizer.bos_token or ''} {text} {tokenizer.eos_token or ''}"
    return text


def _sample(out: tuple[list[Any], list[Any]], ids: Sequence[int], mask: Sequence[int],
            context: int | None = None) -> None:
    import numpy as np

    input_ids = np.asarray(ids, dtype=np.int64)
    attention = np.asarray(mask, dtype=np.int64)
    labels = input_ids.copy()
    if context:
        labels[:context] = IGNORE_INDEX
    labels[attention != 1] = IGNORE_INDEX
    out[0].append({"input_ids": input_ids, "attention_mask": attention})
    out[1].append(labels)


def _join(texts: list[str], tokenizer: Any, joiner_ids: list[int], max_seq_len: int,
          step: int, context: int | None, max_samples: int | None, batch: int,
          out: tuple[list[Any], list[Any]]) -> None:
    """Contiguous windows of the joined token stream (Olive's join and join-sliding-window)."""
    done = 0
    pending: list[int] = []
    for start in range(0, len(texts), batch):
        if max_samples is not None and done >= max_samples:
            return
        for ids in tokenizer(texts[start:start + batch], add_special_tokens=False,
                             truncation=False)["input_ids"]:
            pending += list(ids) + joiner_ids
        used = 0
        # a window starts only where a whole max_seq_len (and one token more) is available
        for begin in range(0, len(pending) - max_seq_len, step):
            used = begin + max_seq_len
            window = pending[begin:used]
            _sample(out, window, [1] * len(window), context)
            done += 1
            if max_samples is not None and done >= max_samples:
                return
        pending = pending[used:]


def _join_random(texts: list[str], tokenizer: Any, joiner_ids: list[int], max_seq_len: int,
                 max_samples: int, rng: Random, retries: int,
                 out: tuple[list[Any], list[Any]]) -> None:
    cache: dict[int, list[int]] = {}
    for _ in range(max_samples):
        for _attempt in range(retries):
            first = rng.randint(0, len(texts) - 1)
            stream: list[int] = []
            for i in range(first, len(texts)):
                if i not in cache:
                    cache[i] = list(tokenizer(texts[i], add_special_tokens=False,
                                              truncation=False)["input_ids"])
                stream += cache[i] + joiner_ids
                if len(stream) >= max_seq_len:
                    break
            if len(stream) >= max_seq_len:
                _sample(out, stream[:max_seq_len], [1] * max_seq_len)
                break


def _encode_lines(texts: list[str], tokenizer: Any, max_seq_len: int, pad: bool,
                  drop_short: bool) -> list[tuple[list[int], list[int]]]:
    enc = tokenizer(texts, max_length=max_seq_len, truncation=True,
                    padding="max_length" if pad else False, add_special_tokens=False)
    pairs = list(zip(enc["input_ids"], enc["attention_mask"], strict=True))
    if drop_short:
        pairs = [p for p in pairs if len(p[0]) >= max_seq_len]
    return pairs


def _rows(dataset: Any) -> tuple[list[Mapping[str, Any]], str]:
    rows = list(dataset)
    source = str(getattr(dataset, "source", "the dataset"))
    if rows and not isinstance(rows[0], Mapping):
        raise UsageError(f"{WHERE}: the dataset's items are {type(rows[0]).__name__}, not rows "
                         "of columns (a load_dataset of files or a hub dataset)")
    return rows, source


def text_generation_huggingface_pre_process(
        dataset: Any, model_name: str | None = None, trust_remote_code: bool | None = None,
        user_script: str | None = None, script_dir: str | None = None,
        max_samples: int | None = None, max_seq_len: int | None = None,
        pad_to_max_len: bool | None = None, padding_side: str = "right",
        drop_short_sequences: bool = False, use_attention_mask: bool = True,
        chat_template: bool | str | None = None, message_col: str = "messages",
        add_special_tokens: bool = True, text_formatting_func: str | Callable[..., Any] | None = None,
        text_template: str | None = None, text_cols: Sequence[str] | str | None = None,
        strategy: str = "join", stride: int | None = None, joiner: str | None = "\n\n",
        processing_batch_size: int = 1024, random_seed: int | None = None,
        random_retries: int = 10, task: str | None = None,
        input_cols: Sequence[str] | str | None = None, max_length: int | None = None,
        seq_length: int | None = None, padding: bool | str | None = None) -> TextGenDataset:
    """Tokenize a text corpus for a causal LM with Olive's ``TextGenParams`` (see the module).

    Defaults are Olive's: ``strategy`` join, ``max_seq_len`` 1024, ``joiner`` a blank line,
    ``add_special_tokens`` true (the tokenizer's bos/eos text around each row),
    ``pad_to_max_len`` true, ``text_cols`` ``["text"]``. olivine also reads ``input_cols``
    as ``text_cols`` and ``max_length``/``seq_length`` as ``max_seq_len`` when those are
    not given, and ``padding`` (``max_length``/true: pad, ``longest``/false: do not) as
    ``pad_to_max_len``.
    """
    from olivine_transformers.data_components import _tokenizer

    if pad_to_max_len is None:
        if padding not in (None, True, False, "max_length", "longest", "do_not_pad"):
            raise UsageError(f"{WHERE}: padding {padding!r} is not one of true, false, "
                             "max_length, longest, do_not_pad (or use pad_to_max_len)")
        pad_to_max_len = padding in (None, True, "max_length")
    elif padding is not None:
        raise UsageError(f"{WHERE}: give pad_to_max_len or padding, not both")
    seq_len = next((int(v) for v in (max_seq_len, max_length, seq_length) if v is not None), 1024)
    cols_arg = text_cols if text_cols is not None else input_cols
    cols = [cols_arg] if isinstance(cols_arg, str) else list(cols_arg or ["text"])
    _check(strategy, stride, max_samples, random_seed, pad_to_max_len, drop_short_sequences,
           use_attention_mask, padding_side, seq_len)
    formatter = _formatter(text_formatting_func, user_script, script_dir)
    tokenizer = _tokenizer(model_name, trust_remote_code)
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token  # as Olive's get_tokenizer
    tokenizer.padding_side = padding_side
    rows, source = _rows(dataset)
    texts = [t for i, r in enumerate(rows) if (t := _text(
        r, tokenizer, chat_template, message_col, formatter, text_template, cols,
        add_special_tokens, i))]
    out: tuple[list[Any], list[Any]] = ([], [])
    if not texts:
        raise UsageError(f"yields no samples: {source} has no text ({WHERE})")
    if "join" in strategy:
        joiner_ids = list(tokenizer.encode(joiner, add_special_tokens=False)) if joiner else []
        if strategy == "join-random":
            _join_random(texts, tokenizer, joiner_ids, seq_len, int(max_samples or 0),
                         Random(random_seed), random_retries, out)
        elif strategy == "join-sliding-window":
            _join(texts, tokenizer, joiner_ids, seq_len, int(stride or 1), seq_len - int(stride or 1),
                  max_samples, processing_batch_size, out)
        else:
            _join(texts, tokenizer, joiner_ids, seq_len, seq_len, None, max_samples,
                  processing_batch_size, out)
    elif strategy == "line-by-line":
        # with max_samples, texts are taken in order until that many samples are kept
        start = 0
        while start < len(texts) and (not max_samples or len(out[0]) < max_samples):
            count = len(texts) - start if not max_samples else min(
                max_samples - len(out[0]), len(texts) - start)
            for ids, mask in _encode_lines(texts[start:start + count], tokenizer, seq_len,
                                           pad_to_max_len, drop_short_sequences):
                _sample(out, ids, mask)
            start += count
    else:  # line-by-line-random
        rng = Random(random_seed)
        cache: dict[int, tuple[list[int], list[int]]] = {}
        for _ in range(int(max_samples or 0)):
            picked = None
            for _attempt in range(random_retries):
                i = rng.randint(0, len(texts) - 1)
                if i not in cache:
                    ids, mask = _encode_lines([texts[i]], tokenizer, seq_len, pad_to_max_len,
                                              False)[0]
                    cache[i] = (ids, mask)
                picked = cache[i]
                if not drop_short_sequences or len(picked[0]) >= seq_len:
                    break
            if picked is not None:
                _sample(out, *picked)
    if not out[0]:
        raise UsageError(f"yields no samples: {source} has too few tokens for max_seq_len "
                         f"{seq_len} with strategy {strategy} ({WHERE})")
    if not use_attention_mask:
        for item in out[0]:
            item.pop("attention_mask")
    return TextGenDataset(out[0], out[1], source)
