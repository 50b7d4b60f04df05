"""The ``olivine`` command line. Sub-commands import what they need when they run.

:func:`main` is the one place errors turn into messages and exit codes: olivine's
own errors print their message (exit 2 for bad input, 1 for a failed step), and any
other exception prints one line naming the command, the exception and where it was
raised, with how to see the traceback (``--log_level 0``, which every command takes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
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
    from olivine.cli.inputs import add_disable_telemetry

    for p in sub.choices.values():  # every command takes --log_level (0 shows tracebacks)
        if not any(action.dest == "log_level" for action in p._actions):
            add_log_level(p)
        add_disable_telemetry(p)  # and Olive's --disable_telemetry (olivine sends none)
    return parser


def _wants_traceback(args: Sequence[str]) -> bool:
    """True when the command line asks for ``--log_level 0`` (read before or without argparse)."""
    for i, arg in enumerate(args):
        if arg in ("--log_level", "--log-level") and i + 1 < len(args) and args[i + 1] == "0":
            return True
        if arg in ("--log_level=0", "--log-level=0"):
            return True
    return False


def _frame_text(frame: traceback.FrameSummary) -> str:
    parts = frame.filename.replace("\\", "/").split("/")
    ours = [i for i, part in enumerate(parts) if part.startswith("olivine")]
    start = ours[-1] if ours else len(parts) - 1
    return f"{'/'.join(parts[start:])}:{frame.lineno} in {frame.name}"


def _where(exc: BaseException) -> str:
    """Where ``exc`` was raised, and the innermost frame in olivine or a plugin when that differs."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    where = _frame_text(frames[-1])
    ours = [f for f in frames[:-1] if "/olivine" in f.filename.replace("\\", "/")
            and not (f.name == "main" and f.filename.endswith(("cli/__init__.py", "cli\\__init__.py")))]
    if ours:
        where += f", called from {_frame_text(ours[-1])}"
    return where


def report_unexpected(exc: BaseException, args: Sequence[str]) -> int:
    """Print one line for an exception olivine did not expect (the traceback with ``--log_level 0``).

    Returns the exit code, 1.
    """
    command = next((a for a in args if not a.startswith("-")), "")
    if _wants_traceback(args):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:300] + "..."
    where = _where(exc)
    at = f" at {where}" if where else ""
    label = f"`olivine {command}`" if command else "olivine"
    if isinstance(exc, OSError):  # the machine said no (disk full, permissions): not a bug of ours
        print(f"olivine: error: {label} failed: {type(exc).__name__}: {text}{at}; rerun with "
              "--log_level 0 to see the traceback", file=sys.stderr)
    else:
        print(f"olivine: internal error: {label} failed with {type(exc).__name__}: {text}{at}; this "
              "is a bug in olivine or a plugin: rerun with --log_level 0 to see the traceback, and "
              "report it", file=sys.stderr)
    return 1


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
    except BrokenPipeError:
        raise  # entry() handles a reader that left
    except Exception as exc:  # the one top-level handler: one line, no traceback by default
        return report_unexpected(exc, args_list)


def entry() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `olivine passes X | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    from olivine.fastexit import exit_now

    exit_now(code)  # no interpreter teardown: about 1 s after in-process onnxruntime steps
