"""Workflow configs: reading, normalizing Olive's forms, validating against the plugins.

Public for plugins (API 1.1): :func:`structure` and :class:`Problems` (an attrs class from
a mapping, every problem collected), :func:`is_missing`, :data:`FieldProblems`,
:data:`ALIASES`, the :class:`DataConfig` section, :data:`IO_CONFIG_KEYS`, :data:`HUB_ID`
and :func:`validate_workflow`, :func:`workflow_schema`.
"""

from typing import Any

from olivine.config.loader import load_document
from olivine.config.sections import IO_CONFIG_KEYS, DataConfig
from olivine.config.typed import ALIASES, FieldProblems, Problems, is_missing, structure
from olivine.config.workflow import HUB_ID, PassEntry, SystemEntry, WorkflowConfig, validate_workflow


def workflow_schema(host: Any) -> dict[str, Any]:
    """The JSON schema of workflow configs with ``host``'s plugins' options (``olivine schema``)."""
    from olivine.schema import workflow_schema as schema

    return schema(host)


__all__ = ["ALIASES", "HUB_ID", "IO_CONFIG_KEYS", "DataConfig", "FieldProblems", "PassEntry",
           "Problems", "SystemEntry", "WorkflowConfig", "is_missing", "load_document", "structure",
           "validate_workflow", "workflow_schema"]
