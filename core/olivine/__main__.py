"""``python -m olivine``."""

from olivine.cli import entry

entry()
