"""Workflow configs: reading, normalizing Olive's forms, validating against the plugins."""

from olivine.config.loader import load_document
from olivine.config.workflow import PassEntry, SystemEntry, WorkflowConfig, validate_workflow

__all__ = ["PassEntry", "SystemEntry", "WorkflowConfig", "load_document", "validate_workflow"]
