"""Whether QLoRA's 4-bit backend (bitsandbytes) exists here, and what is missing if not."""

from __future__ import annotations

import importlib.util
import sys

from olivine import UsageError

INSTALL = "pip install 'olivine-lora[qlora]' (bitsandbytes>=0.46, which also has a CPU backend)"


def bitsandbytes_installed() -> bool:
    """True when bitsandbytes can be found (without importing it)."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"] is not None
    try:
        return importlib.util.find_spec("bitsandbytes") is not None
    except (ImportError, ValueError):
        return False


def missing_backend() -> str | None:
    """What keeps QLoRA from running, found without importing anything (``None``: nothing)."""
    if not bitsandbytes_installed():
        return ("QLoRA quantizes the base model to 4 bits with bitsandbytes, which is not "
                f"installed; {INSTALL}, or use LoRA")
    return None


def check_backend(device: str) -> None:
    """Raise :class:`UsageError` unless bitsandbytes runs a 4-bit layer on ``device``."""
    problem = missing_backend()
    if problem:
        raise UsageError(problem)
    try:
        import bitsandbytes as bnb
        import torch
    except Exception as exc:  # a broken install raises anything from RuntimeError to OSError
        raise UsageError(f"QLoRA: bitsandbytes is installed but cannot be imported ({exc}); "
                         f"reinstall it: {INSTALL}") from None
    version = getattr(bnb, "__version__", "?")
    try:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32,
                                  quant_type="nf4").to(device)
        layer(torch.zeros(1, 64, device=device))
    except Exception as exc:  # the backend's error types differ by version and device
        raise UsageError(f"QLoRA: bitsandbytes {version} has no working 4-bit backend for {device} "
                         f"({type(exc).__name__}: {exc}); upgrade it ({INSTALL}) or use LoRA") from None
