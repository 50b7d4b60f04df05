"""Helpers for the CLI commands a plugin registers (``register_commands``).

A command that writes a workflow and runs it (as ``olivine quantize`` does) uses these,
so its flags, dry run and summary read like the host's own commands:

* :func:`add_log_level`, :func:`add_cache_dir`, :func:`add_dry_run`, :func:`add_save_config`
  add the common flags to an argparse parser;
* :func:`cache_dir` resolves a ``--cache_dir`` value (``$OLIVINE_CACHE_DIR``, then the default);
* :func:`run_generated` validates and runs (or plans) the generated workflow;
* :func:`print_summary` prints a finished run's summary;
* :func:`add_input_model_options`, :func:`input_model_config`, :func:`is_hf` give a command
  Olive's model flags (``-m``, ``--adapter_path``, ``--model_script``, ...) and turn them into
  an ``input_model`` section;
* :func:`build_test_model`, :func:`test_model_folder`, :func:`mark_output_folder` serve
  Olive's ``--test`` flag (a randomly initialized model of the input's architecture);
* :func:`record_file` adds a file written into a published output folder after the run
  to the folder's list of files;
* :func:`memory_bytes` reads Olive's ``--memory`` values (``16GB``, ``512MB``, a number).
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
from olivine.cli.inputs import add_input_model_options, input_model_config, is_hf
from olivine.cli.run_pass import memory_bytes
from olivine.cli.testmodel import build_test_model, mark_output_folder, test_model_folder
from olivine.output import record_file

__all__ = ["add_cache_dir", "add_dry_run", "add_input_model_options", "add_log_level",
           "add_save_config", "build_test_model", "cache_dir", "input_model_config", "is_hf",
           "mark_output_folder", "memory_bytes", "print_summary", "record_file", "run_generated",
           "test_model_folder"]
