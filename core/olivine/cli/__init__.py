"""The ``olivine`` command line. Sub-commands import what they need when they run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from olivine import __version__
from olivine.errors import ConfigError, OlivineError, PassError

LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """Add Olive's ``--log_level`` (0 verbose .. 4 quiet)."""
    parser.add_argument("--log_level", type=int, choices=range(5), default=None, metavar="{0..4}",
                        help="0 verbose, 1 info (default), 2 warnings, 3 errors, 4 quiet")


def setup_logging(level: int | None) -> None:
    """Configure logging for a log level of 0..4."""
    lvl = LEVELS[1 if level is None else level]
    logging.basicConfig(level=max(lvl, logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("olivine").setLevel(lvl)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with built-in and plugin sub-commands."""
    from olivine.cli import commands

    parser = argparse.ArgumentParser(
        prog="olivine",
        description="Optimize models for ONNX Runtime and onnxruntime-genai. Every technique is a "
                    "plugin: see `olivine plugins` and `olivine passes`.")
    parser.add_argument("--version", action="version", version=f"olivine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_builtin(sub)
    from olivine.plugins import get_plugin_host

    host = get_plugin_host()
    for spec in sorted(host.commands.values(), key=lambda c: c.name):
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        spec.configure(p)
        p.set_defaults(handler=spec.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (also used as the process exit status)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0
        setup_logging(getattr(args, "log_level", None))
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"olivine: invalid workflow config: {exc}", file=sys.stderr)
        return exc.exit_code
    except PassError as exc:
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        print(f"olivine: {exc}", file=sys.stderr)
        report = getattr(exc, "report_path", None)
        if report:
            print(f"olivine: report: {report}", file=sys.stderr)
        return exc.exit_code
    except OlivineError as exc:
        print(f"olivine: error: {exc}", file=sys.stderr)
        report = getattr(exc, "report_path", None)
        if report:
            print(f"olivine: report: {report}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("olivine: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `olivine passes X | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
