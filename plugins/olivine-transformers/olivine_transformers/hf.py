"""What olivine-transformers offers other plugins (its public API; the ``_`` modules are private)."""

from __future__ import annotations

from typing import Any

__all__ = ["auto_class"]


def auto_class(task: str) -> Any:
    """The transformers Auto class for an Olive ``task`` name (``text-generation``, ...)."""
    from olivine_transformers._export import auto_class as find

    return find(task)
