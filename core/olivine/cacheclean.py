"""Listing, cleaning and verifying a step cache (``olivine cache ls|clean|verify``).

Cleaning never removes a step that a running workflow uses: a run lists the steps it
takes from or puts into the cache in ``runs/<id>/uses.txt`` while it holds its run
lock, and a step is removed only while holding the step's lock, after checking that
no live run lists it. Entries are removed by renaming them out of ``steps/`` first,
so a reader never sees half a step.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from olivine.cache import STEP_FILE, created_time, tree_size

if TYPE_CHECKING:
    from olivine.cache import Cache


@attrs.define
class CleanReport:
    """What :func:`clean` did."""

    removed: int = 0
    freed: int = 0
    in_use: int = 0
    runs_removed: int = 0


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def entries(cache: Cache) -> list[dict[str, Any]]:
    """Every finished step, oldest first: key, pass, step, size_bytes, created (or None), path."""
    rows = []
    for folder in _children(cache.root / "steps"):
        if not (folder / STEP_FILE).is_file():
            continue
        record, _ = cache.read_record(folder.name)
        record = record or {}
        rows.append({"key": folder.name, "pass": str(record.get("pass", "?")),
                     "step": str(record.get("step", "?")), "size_bytes": tree_size(folder),
                     "created": created_time(record), "path": str(folder)})
    rows.sort(key=lambda r: (r["created"] is not None, r["created"] or 0.0))
    return rows


def _victims(rows: list[dict[str, Any]], older_than_s: float | None,
             max_size: int | None) -> list[dict[str, Any]]:
    """The entries to remove: all, those older than ``older_than_s``, then oldest first until
    the rest fits in ``max_size`` bytes (an entry without a readable date counts as oldest)."""
    if older_than_s is None and max_size is None:
        return rows
    now = time.time()
    victims: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for row in rows:
        age = now - row["created"] if row["created"] is not None else float("inf")
        (victims if older_than_s is not None and age >= older_than_s else kept).append(row)
    if max_size is not None:
        total = sum(r["size_bytes"] for r in kept)
        for row in kept:
            if total <= max_size:
                break
            victims.append(row)
            total -= row["size_bytes"]
    return victims


def clean(cache: Cache, older_than_s: float | None = None, max_size: int | None = None) -> CleanReport:
    """Remove finished steps and what runs left behind; never anything a running workflow uses.

    Without limits every step goes, with ``older_than_s`` those older than that, with
    ``max_size`` the oldest until the rest fits. Folders of finished runs in ``runs/``
    are pruned by the same age (all without ``older_than_s``; none with only ``max_size``).
    """
    if older_than_s is not None and older_than_s < 0:
        raise ValueError("older_than_s must not be negative")
    if max_size is not None and max_size < 0:
        raise ValueError("max_size must not be negative")
    report = CleanReport()
    for row in _victims(entries(cache), older_than_s, max_size):
        with cache.lock(row["key"]):
            if row["key"] in cache.keys_in_use():
                report.in_use += 1
                continue
            report.freed += cache.remove_entry(row["key"])
            report.removed += 1
    if older_than_s is None and max_size is None:
        state = cache.root / "state"
        for folder in _children(state):
            with cache.try_lock(f"{folder.name}.lock") as free:
                if free:
                    shutil.rmtree(folder, ignore_errors=True)
    for stale in _children(cache.root / "tmp"):
        with cache.try_lock(f"{stale.name.split('.')[0]}.lock") as free:
            if free:
                shutil.rmtree(stale, ignore_errors=True)
    if max_size is None or older_than_s is not None:
        report.runs_removed = _prune_runs(cache, older_than_s)
    return report


def _prune_runs(cache: Cache, older_than_s: float | None) -> int:
    now, removed = time.time(), 0
    for run_dir in _children(cache.root / "runs"):
        lock_name = f"run-{run_dir.name}.lock"
        try:
            age = now - run_dir.stat().st_mtime
        except OSError:
            continue
        if older_than_s is not None and age < older_than_s:
            continue
        with cache.try_lock(lock_name) as free:
            if not free or run_dir.name == getattr(cache, "_run_id", None):
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            (cache.root / "locks" / lock_name).unlink(missing_ok=True)
            removed += 1
    return removed


def verify(cache: Cache) -> tuple[int, list[dict[str, Any]]]:
    """Read every step's files in full against their recorded sizes and hashes.

    Returns the number of steps checked and one row per damaged entry (key, step, pass,
    problem, removed). A damaged entry is removed (a run would discard it anyway) unless
    a running workflow uses it.
    """
    bad = []
    rows = entries(cache)
    for row in rows:
        key = row["key"]
        with cache.lock(key):
            record, problem = cache.read_record(key)
            if problem is None and record is not None:
                problem = cache.check_files(key, record["files"], full=True)
            if problem is None:
                continue
            removed = key not in cache.keys_in_use()
            if removed:
                cache.remove_entry(key)
            bad.append({"key": key, "step": row["step"], "pass": row["pass"], "problem": problem,
                        "removed": removed})
    return len(rows), bad
