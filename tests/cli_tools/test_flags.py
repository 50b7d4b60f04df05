"""Every flag of Olive 0.13's ``extract-adapters``, ``generate-cost-model``,
``generate-model-package``, ``init`` and ``shared-cache`` is a flag of olivine's command.

The lists were read from Olive's argparse parsers (``olive.cli.launcher.get_cli_parser()``,
each sub-parser's option strings but ``-h``/``--help``), olive-ai 0.13.0.
"""

from __future__ import annotations

import pytest

OLIVE_FLAGS = {
    "extract-adapters": ["--cache_dir", "--disable_telemetry", "--dtype", "--format", "--log_level",
                         "--model_name_or_path", "--model_script", "--output_path", "--script_dir",
                         "--task", "--test", "--trust_remote_code", "-f", "-m", "-o", "-t"],
    "generate-cost-model": ["--disable_telemetry", "--model_name_or_path", "--output_path", "--task",
                            "--test", "--trust_remote_code", "--weight_precision", "-m", "-o", "-p",
                            "-t"],
    "generate-model-package": ["--disable_telemetry", "--log_level", "--model_name",
                               "--model_version", "--output_path", "--source", "-o", "-s"],
    "init": ["--output_path", "-o"],
    "shared-cache": ["--account", "--all", "--container", "--delete", "--disable_telemetry",
                     "--model_hash", "--yes", "-y"],
}


@pytest.mark.parametrize("command", sorted(OLIVE_FLAGS))
def test_olives_flags_are_accepted(command: str) -> None:
    from olivine.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[attr-defined]
    ours = {s for action in parser._actions for s in action.option_strings}
    assert sorted(set(OLIVE_FLAGS[command]) - ours) == []
