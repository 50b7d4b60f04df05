"""``olivine shared-cache``: list or delete entries of a shared step cache (Olive's flags).

Olive's ``--account``/``--container`` name an Azure Blob container; olivine's ``--path``
takes any fsspec location (a folder, ``s3://``, ``gs://``, ``az://``) and
``--storage_option KEY=VALUE`` its options. Without ``--delete`` the entries are listed.
``--delete --all`` removes only entries olivine wrote (a sound ``step.json``), never other
objects in the container.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from olivine.errors import UsageError


def add_disable_telemetry(p: argparse.ArgumentParser) -> None:
    """Olive's ``--disable_telemetry``: olivine sends no telemetry, so it is always disabled."""
    if not any(a.dest == "disable_telemetry" for a in p._actions):
        p.add_argument("--disable_telemetry", action="store_true",
                       help="olivine sends no telemetry (accepted for Olive's command lines)")


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine shared-cache``."""
    from olivine.cli import add_log_level

    p.add_argument("--delete", action="store_true",
                   help="delete entries: the one --model_hash names, or --all")
    p.add_argument("--all", action="store_true", help="with --delete: every entry olivine wrote")
    p.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    p.add_argument("--account", default=None, help="Azure storage account of the shared cache")
    p.add_argument("--container", default=None, help="Azure Blob container of the shared cache")
    p.add_argument("--model_hash", default=None,
                   help="a step key (or output id), or its first 8+ hex digits")
    p.add_argument("--path", default=None,
                   help="olivine: the shared cache as an fsspec URL or folder (s3://bucket/prefix, "
                        "gs://..., az://..., /shared/folder) instead of --account/--container")
    p.add_argument("--storage_option", action="append", default=[], metavar="KEY=VALUE",
                   help="olivine: an fsspec option of --path (repeat; JSON values are parsed)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                   help="with --delete: print what would be deleted, delete nothing")
    add_log_level(p)
    add_disable_telemetry(p)


def storage_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` flags as a dict (values read as JSON when they parse)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--storage_option: expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def open_target(args: argparse.Namespace) -> Any:
    """The :class:`olivine.sharedcache.SharedCache` the flags name."""
    from olivine.sharedcache import SharedCache, azure_target

    options = storage_options(args.storage_option)
    if args.path:
        if args.account or args.container:
            raise UsageError("--path: give either --path or --account/--container, not both")
        return SharedCache(args.path, options, flag="--path")
    if not (args.account and args.container):
        missing = "--container" if args.account else "--account"
        raise UsageError(f"{missing}: name the shared cache with --account and --container (an "
                         "Azure Blob container, as Olive), or with --path URL (any fsspec location)")
    url, azure = azure_target(args.account, args.container)
    return SharedCache(url, {**azure, **options}, flag="--account/--container")


def _when(created: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created is not None else "?"


def cmd_shared_cache(args: argparse.Namespace) -> int:
    """``olivine shared-cache``."""
    if args.all and not args.delete:
        raise UsageError("--all: only with --delete (--delete --all removes every entry olivine wrote)")
    if args.delete and not args.all and not args.model_hash:
        raise UsageError("--delete: say what to delete: --model_hash HASH, or --all")
    if args.delete and args.all and args.model_hash:
        raise UsageError("--model_hash: give --model_hash or --all, not both")
    if args.model_hash is not None:
        h = args.model_hash.strip().lower()
        if len(h) < 8 or any(c not in "0123456789abcdef" for c in h):
            raise UsageError(f"--model_hash: expected 8 to 64 hex digits of a step key, got "
                             f"{args.model_hash!r} (see `olivine shared-cache --path ...` for keys)")
        args.model_hash = h
    shared = open_target(args)
    rows = shared.matching(args.model_hash) if args.model_hash else shared.entries()
    if not args.delete:
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        total = sum(r["size_bytes"] for r in rows)
        print(f"{shared.url}: {len(rows)} steps, {total / 2**20:.1f} MiB")
        for r in rows:
            print(f"  {r['key'][:16]}  {r['pass']:<28} {r['step']:<16} "
                  f"{r['size_bytes'] / 2**20:9.1f} MiB  {_when(r['created'])}")
        return 0
    if not rows:
        what = f"matches {args.model_hash!r}" if args.model_hash else "was written by olivine"
        print(f"no entry of {shared.url} {what}; nothing deleted")
        return 0
    if args.dry_run:
        for r in rows:
            print(f"would delete {r['key']}  {r['pass']} {r['step']}")
        print(f"{len(rows)} entries would be deleted from {shared.url} (dry run)")
        return 0
    if args.all and not args.yes:
        try:
            answer = input(f"Are you sure you want to delete all cache? {len(rows)} entries in "
                           f"{shared.url} (y/n): ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "y":
            print("nothing deleted", file=sys.stderr)
            return 0
    removed = sum(1 for r in rows if shared.delete(r["key"]))
    freed = sum(r["size_bytes"] for r in rows)
    print(f"deleted {removed} entries ({freed / 2**20:.1f} MiB) from {shared.url}")
    return 0
