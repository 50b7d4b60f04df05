"""Record textgen_olive_expected.json with Olive 0.13's own text_gen_pre_process.

Run with the Python of a venv that has olive-ai 0.13, torch and transformers (``datasets``
is not needed: Olive only holds the rows in a ``datasets.Dataset``, and a stand-in with
the calls it makes is used)::

    /tmp/olive-venv/bin/python tests/data/record_textgen_expected.py
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class RowsStandIn:
    """The part of ``datasets.Dataset`` Olive's text_gen_pre_process uses."""

    def __init__(self, cols: dict[str, list[Any]]) -> None:
        self.cols = cols

    @classmethod
    def from_dict(cls, cols: dict[str, list[Any]]) -> RowsStandIn:
        return cls(dict(cols))

    @classmethod
    def from_list(cls, rows: list[dict[str, Any]]) -> RowsStandIn:
        return cls({k: [r[k] for r in rows] for k in rows[0]})

    def map(self, func: Any) -> RowsStandIn:
        rows = [dict(zip(self.cols, values, strict=True)) for values in zip(*self.cols.values(),
                                                                            strict=True)]
        return RowsStandIn.from_list([{**r, **func(r)} for r in rows])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.cols[key]
        return {c: v[key] for c, v in self.cols.items()}

    def __len__(self) -> int:
        return len(next(iter(self.cols.values())))

    def set_format(self, *args: Any, **kwargs: Any) -> None:
        """Olive asks for torch tensors; the values are read as lists here."""


def main() -> None:
    """Run every case of textgen_cases.json through Olive; write the samples as JSON."""
    stand_in = types.ModuleType("datasets")
    stand_in.Dataset = RowsStandIn  # type: ignore[attr-defined]
    sys.modules.setdefault("datasets", stand_in)
    sys.path.insert(0, str(HERE))
    import tempfile

    from olive.common.hf.utils import get_tokenizer
    from olive.data.component.text_generation import text_gen_pre_process
    from wordlevel_tokenizer import save_tokenizer, texts

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = get_tokenizer(str(save_tokenizer(Path(tmp) / "tok")))
        out = {}
        for name, options in json.loads((HERE / "textgen_cases.json").read_text()).items():
            rows = [{"text": t, "q": t.split(" ")[0], "a": t.split(" ")[-1],
                     "messages": [{"role": "user", "content": t}]} for t in texts()]
            dataset = text_gen_pre_process(RowsStandIn.from_list(rows), tokenizer, dict(options))
            samples = []
            for i in range(len(dataset)):
                inputs, labels = dataset[i]
                mask = inputs.get("attention_mask")
                samples.append({"input_ids": [int(x) for x in inputs["input_ids"]],
                                "attention_mask": None if mask is None else [int(x) for x in mask],
                                "labels": [int(x) for x in labels]})
            out[name] = samples
    (HERE / "textgen_olive_expected.json").write_text(json.dumps(out, separators=(",", ":")))
    print({k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    main()
