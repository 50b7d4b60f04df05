"""The host's built-in sub-commands: run, plugins, passes, schema, cache."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olivine.cli.generated import add_cache_dir


def add_builtin(sub: Any) -> None:
    """Add the built-in sub-commands to ``sub`` (an argparse sub-parsers object)."""
    from olivine.cli import add_log_level

    p = sub.add_parser("run", help="run a workflow config (JSON or YAML, Olive's forms accepted)",
                       description="Run a workflow config. Olive's current and older forms work.")
    p.add_argument("--config", "--run-config", dest="config", required=True, help="workflow file")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="validate and print the resolved plan without running it")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path",
                   help="overrides engine.output_dir")
    p.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", help="overrides engine.cache_dir")
    add_log_level(p)
    from olivine.cli.run_flags import add_run_flags

    add_run_flags(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("plugins", help="list installed plugins and what each registers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("passes", help="list passes, or show one pass's options")
    p.add_argument("name", nargs="?", help="a pass type")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_passes)

    p = sub.add_parser("schema", help="print the JSON schema of workflow files and pass configs")
    p.add_argument("--pass", dest="pass_name", help="only this pass's config")
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("cache", help="list, clean or verify the step cache",
                       description="ls: list the cached steps. clean: remove steps (never one a running "
                                   "workflow uses) and finished runs' records. verify: read every "
                                   "step's files against the sizes and sha256 stored with it, remove "
                                   "damaged entries, exit 1 if any were found.")
    p.add_argument("action", choices=["ls", "clean", "verify"])
    add_cache_dir(p, help="cache folder (default: $OLIVINE_CACHE_DIR or .olivine-cache)")
    p.add_argument("--older-than", "--older_than", dest="older_than", default=None,
                   help="with clean: only entries (and run records) older than this (30m, 12h, 7d)")
    p.add_argument("--max-size", "--max_size", dest="max_size", default=None,
                   help="with clean: remove the oldest entries until the cache fits (500M, 20G)")
    p.add_argument("--json", action="store_true", help="with ls and verify: print JSON")
    p.set_defaults(handler=cmd_cache)

    p = sub.add_parser("script", help="run a Python script written for Olive (olive.workflows.run, "
                                      "olive.data.registry) with olivine",
                       description="Run FILE as __main__ with olivine standing in for Olive's "
                                   "olive.workflows.run / olive.run and olive.data.registry "
                                   "(only when no real Olive is installed).")
    p.add_argument("file", help="the Python script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    p.set_defaults(handler=cmd_script)

    from olivine.cli import run_pass
    from olivine.cli.tools import add_tools

    add_tools(sub)  # shared-cache, generate-model-package, init
    run_pass.add(sub)


def cmd_script(args: argparse.Namespace) -> int:
    """``olivine script FILE ARGS...``: a user's driver script, Olive's imports answered."""
    import runpy
    from pathlib import Path

    from olivine.data.olive_compat import active
    from olivine.errors import UsageError

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"script: no such file {args.file!r}")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *args.args]
    sys.path.insert(0, str(path.resolve().parent))
    try:
        with active():
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``olivine run``."""
    from olivine.cli.run_flags import run_overrides, use_tempdir

    overrides: dict[str, Any] = run_overrides(args)
    with use_tempdir(args.tempdir):
        return _run(args, overrides)


def _run(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from olivine.api import validate
    from olivine.cli.run_flags import list_required_packages
    from olivine.engine import Engine
    from olivine.plugins import get_plugin_host

    if args.output_path:
        overrides["output_dir"] = args.output_path
    if args.cache_dir:
        overrides["cache_dir"] = args.cache_dir
    if args.log_level is not None:
        overrides["log_severity_level"] = args.log_level
    workflow = validate(args.config, **overrides)
    engine = Engine(workflow, get_plugin_host())
    if args.list_required_packages:
        return list_required_packages(engine, workflow.engine.output_dir)
    if args.dry_run:
        print_plan(engine)
        return 0
    result = engine.run()
    if args.test not in (None, False):
        from olivine.cli.testmodel import mark_output_folder

        mark_output_folder(str(result.output_dir or workflow.engine.output_dir))
    if workflow.engine.log_severity_level < 4:
        print((result.report_path.parent / "summary.txt").read_text(), end="")
        print(f"  report: {result.report_path}")
    return 0


def print_plan(engine: Any) -> None:
    """Print what a run would do."""
    wf = engine.wf
    model = wf.input_model
    print(f"workflow {wf.workflow_id} ({wf.source or 'dict'}): valid")
    where = "hub id" if model.is_hub_id else "local"
    print(f"  input model: {model.type} {model.handle.path} ({where})")
    print(f"  target: {engine.accelerator.device} / {engine.accelerator.execution_provider} "
          f"on {wf.target_system().name}; passes run on {wf.host_system().name} "
          f"({wf.host_system().type})")
    for step in engine.plan():
        iso = ", child process" if step.isolate else ""
        print(f"  {step.index}. {step.name}: {step.pass_name} ({step.plugin}{iso}) "
              f"{'/'.join(step.accepts)} -> {step.produces}")
        for key, value in step.config.items():
            print(f"       {key} = {json.dumps(value)}")
    if wf.engine.evaluator:
        metrics = wf.evaluators[wf.engine.evaluator].metrics
        print(f"  evaluator {wf.engine.evaluator}: " + ", ".join(f"{m.name} ({m.type})" for m in metrics))
    print(f"  output: {Path(wf.engine.output_dir).resolve()}")
    print(f"  cache: {Path(wf.engine.cache_dir).resolve()}")
    from olivine.sharedcache import for_engine

    shared = for_engine(wf.engine)  # opened: a missing fsspec implementation is an error now
    if shared is not None:
        print(f"  shared cache: {shared.url}" + ("" if shared.update else " (download only)"))


def cmd_plugins(args: argparse.Namespace) -> int:
    """``olivine plugins``."""
    from olivine.plugins import get_plugin_host

    rows = get_plugin_host().describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        kind = " (built-in)" if row["builtin"] else ""
        print(f"{row['name']} {row['version']}{kind}  [{row['distribution']}]")
        for what in ("passes", "metric_types", "systems", "commands"):
            if row[what]:
                print(f"    {what.replace('_', ' ')}: {', '.join(row[what])}")
    return 0


def _doc(cls: type) -> str:
    return (cls.__doc__ or "").strip().split("\n")[0]


def cmd_passes(args: argparse.Namespace) -> int:
    """``olivine passes [NAME]``."""
    from olivine.config.typed import describe_fields
    from olivine.errors import UsageError
    from olivine.plugins import get_plugin_host

    host = get_plugin_host()
    if args.name:
        cls = host.passes.get(args.name)
        if cls is None:
            raise UsageError(host.passes.unknown(args.name))
        info: dict[str, Any] = {
                "name": cls.name, "aliases": list(cls.aliases), "plugin": host.passes.owner(cls.name),
                "doc": (cls.__doc__ or "").strip(), "accepts": list(cls.accepts),
                "produces": cls.produces, "isolate": cls.isolate,
                "options": describe_fields(cls.Config)}
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        print(f"{cls.name}  (plugin {info['plugin']})")
        if cls.aliases:
            print(f"  also: {', '.join(cls.aliases)}")
        print(f"  {info['doc']}\n  takes {'/'.join(cls.accepts)} -> gives {cls.produces}")
        print("  options:")
        for row in info["options"]:
            print(f"    {row['name']} ({row['type']}, default {json.dumps(row['default'])})")
            if row["help"]:
                print(f"        {row['help']}")
        return 0
    rows = [{"name": n, "plugin": o, "doc": _doc(c)} for n, c, o in host.passes.items()
            if getattr(c, "name", n) == n]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no passes installed; install a plugin (see `olivine plugins`)")
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['doc']}  [{r['plugin']}]")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """``olivine schema``."""
    from olivine.errors import UsageError
    from olivine.plugins import get_plugin_host
    from olivine.schema import pass_schema, workflow_schema

    host = get_plugin_host()
    if args.pass_name:
        cls = host.passes.get(args.pass_name)
        if cls is None:
            raise UsageError(host.passes.unknown(args.pass_name))
        print(json.dumps(pass_schema(cls), indent=2, default=str))
    else:
        print(json.dumps(workflow_schema(host), indent=2, default=str))
    return 0


def _parse_amount(text: str, flag: str, units: Mapping[str, float], example: str) -> float:
    import math

    from olivine.errors import UsageError

    raw = text.strip()
    number, scale = raw, 1.0
    for suffix in sorted(units, key=len, reverse=True):
        if raw.lower().endswith(suffix) and suffix:
            number, scale = raw[: -len(suffix)], units[suffix]
            break
    try:
        value = float(number) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f"{flag}: expected a number with {example}, got {text!r}")
    if value < 0:
        raise UsageError(f"{flag}: {text!r} is negative; give an amount of 0 or more (like "
                         f"{example.split('like ')[-1].rstrip(')')})")
    return value


def parse_age(text: str) -> float:
    """``30m``, ``12h``, ``7d`` (or seconds) as seconds; negative or unreadable values are refused."""
    return _parse_amount(text, "--older-than", {"s": 1, "m": 60, "h": 3600, "d": 86400},
                         "s, m, h or d (like 7d)")


def parse_size(text: str) -> int:
    """``500M``, ``20G``, ``1.5GiB`` (or bytes) as bytes; negative or unreadable values are refused."""
    units = {"b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
             "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
    return int(_parse_amount(text, "--max-size", units, "K, M, G or T (like 20G)"))


def _when(created: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created is not None else "?"


def cmd_cache(args: argparse.Namespace) -> int:
    """``olivine cache ls|clean|verify``."""
    from olivine.cache import Cache
    from olivine.cacheclean import verify
    from olivine.cli.generated import cache_dir
    from olivine.errors import UsageError
    from olivine.safepath import path_problem

    older = parse_age(args.older_than) if args.older_than else None
    max_size = parse_size(args.max_size) if args.max_size else None
    root = cache_dir(args.cache_dir)
    problem = path_problem(root)
    if problem is not None:
        raise UsageError(f"--cache_dir {root!r}: {problem}")
    if not Path(root).is_dir():
        print(f"no cache at {Path(root).resolve()}")
        return 0
    cache = Cache.existing(root)
    if args.action == "ls":
        rows = cache.entries()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        total = sum(r["size_bytes"] for r in rows)
        print(f"{cache.root}: {len(rows)} steps, {total / 2**20:.1f} MiB")
        for r in rows:
            mib = r["size_bytes"] / 2**20
            print(f"  {r['key'][:16]}  {r['pass']:<28} {r['step']:<16} {mib:9.1f} MiB  {_when(r['created'])}")
        return 0
    if args.action == "verify":
        checked, bad = verify(cache)
        if args.json:
            print(json.dumps(bad, indent=2))
        else:
            for b in bad:
                what = "removed" if b["removed"] else "kept: a running workflow uses it"
                print(f"  {b['key'][:16]}  {b['step']}: {b['problem']} ({what})")
            print(f"verified {checked} steps in {cache.root}: {len(bad)} damaged")
        return 1 if bad else 0
    done = cache.clean(older, max_size)
    line = f"removed {done.removed} steps ({done.freed / 2**20:.1f} MiB) from {cache.root}"
    if done.in_use:
        line += f"; kept {done.in_use} in use by a running workflow"
    if done.runs_removed:
        line += f"; removed {done.runs_removed} finished runs' records"
    print(line, file=sys.stdout)
    return 0
