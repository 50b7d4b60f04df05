"""Helpers for the CLI commands a plugin registers (``register_commands``).

A command that writes a workflow and runs it (as ``olivine quantize`` does) uses these,
so its flags, dry run and summary read like the host's own commands:

* :func:`add_log_level`, :func:`add_cache_dir`, :func:`add_dry_run`, :func:`add_save_config`
  add the common flags to an argparse parser;
* :func:`cache_dir` resolves a ``--cache_dir`` value (``$OLIVINE_CACHE_DIR``, then the default);
* :func:`run_generated` validates and runs (or plans) the generated workflow;
* :func:`print_summary` prints a finished run's summary.
"""

from __future__ import annotations

from olivine.cli import add_log_level
from olivine.cli.generated import (
           add_cache_dir,
           add_dry_run,
           add_save_config,
           cache_dir,
           print_summary,
           run_generated,
)

__all__ = ["add_cache_dir", "add_dry_run", "add_log_level", "add_save_config", "cache_dir",
           "print_summary", "run_generated"]
