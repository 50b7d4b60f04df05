"""The content-addressed step cache.

Layout under ``cache_dir``::

    CACHEDIR.TAG          written when the cache is created; marks the folder as olivine's
    steps/<key>/          a finished step: step.json and output/ (the model files)
    tmp/<key>.<pid>.<n>/  a step being computed (never read as a result)
    locks/<key>.lock      held while one process computes, checks or removes <key>
    locks/run-<id>.lock   held by a running workflow for as long as it runs
    runs/<run_id>/        run.json and summary.txt of every run, failed ones too; while a
                          run is running, uses.txt lists the steps it uses (never cleaned)
    file-hashes.sqlite    content hashes of files by path, size, mtime and inode

A step's key is the sha256 of its input model's identity, the pass name and
version, its plugin's version, the resolved config with the files it reads (see
``olivine.inputs``), the accelerator and the versions of the libraries that do
the work. No absolute path enters a key. A step appears in ``steps/`` only by
an atomic rename of a complete folder, so a killed run leaves nothing that a
later run could take for a result. ``step.json`` records the size and sha256 of
every file of the step and a checksum of itself; a hit checks them (sizes always,
contents through the hash memo) and a damaged entry is discarded and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import attrs
import filelock

from olivine.errors import UsageError
from olivine.models import HfModel, ModelHandle, PyTorchModel, handle_from_dict
from olivine.safepath import inside

#: Libraries whose versions enter a step's key when its pass does not name its own.
DEFAULT_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-genai")
STEP_FILE = "step.json"
#: The cache directory tag (https://bford.info/cachedir/): backup tools skip the folder, and
#: ``olivine cache`` commands touch only folders that hold it.
MARKER = "CACHEDIR.TAG"
_MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file is a cache directory tag created by olivine (its step cache).\n"
                "# For information about cache directory tags see https://bford.info/cachedir/\n")
_LAYOUT = ("steps", "tmp", "locks", "runs")
#: step.json with file sizes, hashes and its own checksum.
RECORD_FORMAT = 2
log = logging.getLogger("olivine.cache")
_CHUNK = 1 << 22


def library_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` for missing ones), without importing them."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: the form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """The hex sha256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content (read in chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_checksum(record: Mapping[str, Any]) -> str:
    """The checksum a step record carries of itself (over every key but ``record_sha256``)."""
    return sha256_text(canonical_json({k: v for k, v in record.items() if k != "record_sha256"}))


def created_time(record: Mapping[str, Any]) -> float | None:
    """A record's ``created`` as seconds since the epoch, or ``None`` when missing or unreadable."""
    value: Any = record.get("created")
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def is_olivine_cache(root: Path) -> bool:
    """True when ``root`` holds the cache directory tag olivine writes."""
    try:
        text = (root / MARKER).read_text(errors="replace")
    except OSError:
        return False
    return text.startswith(_MARKER_TEXT.split("\n")[0]) and "olivine" in text


def _without_paths(described: dict[str, Any]) -> dict[str, Any]:
    """A handle's description without its location fields (nested handles too)."""
    out: dict[str, Any] = {}
    for k, v in described.items():
        if k in ("path", "adapter_path", "model_script", "script_dir"):
            continue
        if isinstance(v, dict) and "kind" in v:
            v = _without_paths(v)
        elif k == "components":
            v = [[n, _without_paths(h)] for n, h in v]
        out[k] = v
    return out


@attrs.frozen
class CachedStep:
    """A finished step found in the cache."""

    key: str
    model: ModelHandle
    output_id: str
    meta: dict[str, Any]


def _being_created(root: Path) -> bool:
    """True when ``root`` is empty, or holds only what another olivine process creating the
    cache right now has written so far (its marker's temporary file). Such a process
    finishes within moments: wait for its marker rather than refuse the folder."""
    def ours_so_far() -> bool:
        return all(entry.name.startswith(f".{MARKER}.") for entry in root.iterdir())

    if ours_so_far():
        return True
    for _ in range(20):  # the other process's marker appears after one rename
        if is_olivine_cache(root):
            return True
        time.sleep(0.05)
    return is_olivine_cache(root)


class Cache:
    """One cache folder; safe for several processes at once.

    Nothing is written until the cache is first used (or :meth:`ensure` is called), so
    a caller can check the folder against others first.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._db_path = self.root / "file-hashes.sqlite"
        self._ready = False
        self._locks: dict[str, filelock.FileLock] = {}
        self._run_id: str | None = None
        self._leased: set[str] = set()

    @classmethod
    def existing(cls, root: str | Path) -> Cache:
        """The cache at ``root``; a UsageError when the folder is not one olivine created."""
        cache = cls(root)
        if not is_olivine_cache(cache.root):
            raise UsageError(f"{str(cache.root)!r} is not an olivine cache (it has no {MARKER} written "
                             "by olivine); olivine's cache commands only touch folders olivine created "
                             "(an older olivine's cache gets the tag at its next run)")
        cache._ready = True
        return cache

    def exists(self) -> bool:
        """True when the folder is an olivine cache already."""
        return is_olivine_cache(self.root)

    def ensure(self) -> None:
        """Create the cache folder and its marker; refuse a folder that holds other things."""
        if self._ready:
            return
        root = self.root
        if root.exists() and not root.is_dir():
            raise UsageError(f"cache_dir {str(root)!r} is a file; give a folder path")
        if not is_olivine_cache(root):
            legacy = all((root / sub).is_dir() for sub in _LAYOUT)  # made before the marker existed
            if root.is_dir() and not legacy and not _being_created(root):
                raise UsageError(f"cache_dir {str(root)!r} holds files and is not an olivine cache "
                                 f"(no {MARKER}); give a new or empty folder, or an olivine cache")
            try:
                root.mkdir(parents=True, exist_ok=True)
                tmp = root / f".{MARKER}.{os.getpid()}"
                tmp.write_text(_MARKER_TEXT)
                os.replace(tmp, root / MARKER)
            except OSError as exc:
                raise UsageError(f"cache_dir {str(root)!r}: cannot create it: {exc.strerror or exc}") \
                    from None
        for sub in _LAYOUT:
            (root / sub).mkdir(exist_ok=True)
        self._ready = True

    # -- identities ---------------------------------------------------------------------
    def file_hash(self, path: Path) -> str:
        """sha256 of a file's content, remembered by path, size, mtime and inode."""
        st = path.stat()
        stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._db() as db:
            row = db.execute("SELECT sha256 FROM files WHERE path=? AND size=? AND mtime_ns=? AND ino=?",
                             stamp).fetchone()
        if row:
            return str(row[0])
        value = sha256_file(path)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", (*stamp, value))
        return value

    def remember(self, path: Path, sha256: str) -> None:
        """Enter a hash known for ``path`` (a file olivine just wrote) into the memo."""
        st = path.stat()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                       (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, sha256))

    def forget(self, folder: Path) -> None:
        """Drop the memo's rows for files under ``folder`` (after removing it)."""
        prefix = str(folder) + os.sep
        with self._db() as db:
            db.execute("DELETE FROM files WHERE path >= ? AND path < ?",
                       (prefix, prefix[:-1] + chr(ord(os.sep) + 1)))

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.ensure()
        db = sqlite3.connect(self._db_path, timeout=60)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                       "mtime_ns INTEGER, ino INTEGER, sha256 TEXT)")
            yield db
            db.commit()
        finally:
            db.close()

    def model_identity(self, handle: ModelHandle) -> str:
        """A sha256 naming the model's content (local files) or its hub id and revision."""
        # no absolute path enters the identity: the same files elsewhere are the same model
        described = _without_paths(handle.to_dict())
        if isinstance(handle, HfModel) and not handle.is_local():
            revision = handle.load_options().get("revision", "main")
            described["hub"] = f"{handle.path}@{revision}"
        else:
            root = Path(handle.path)
            if isinstance(handle, PyTorchModel) and not (handle.path and root.exists()):
                described["model_path"] = handle.path  # a hub id, or nothing: as written
                root = Path(handle.script_dir or Path(handle.model_script or ".").parent)
            base = root if root.is_dir() else root.parent
            described["files"] = {f.relative_to(base).as_posix() if f.is_relative_to(base) else f.name:
                                  self.file_hash(f) for f in handle.files()}
        if isinstance(handle, HfModel) and handle.adapter_path:
            adapter = Path(handle.adapter_path)
            files = sorted(f for f in adapter.rglob("*") if f.is_file()) if adapter.is_dir() else []
            described["adapter_path"] = {f.relative_to(adapter).as_posix(): self.file_hash(f)
                                         for f in files}
        return sha256_text(canonical_json(described))

    @staticmethod
    def step_key(parts: Mapping[str, Any]) -> str:
        """The full sha256 key of a step from everything that determines its output."""
        return sha256_text(canonical_json(parts))

    # -- locks and the steps a running workflow uses ----------------------------------------
    def _file_lock(self, name: str) -> filelock.FileLock:
        self.ensure()
        path = str(inside(self.root, "locks", name, what="lock file"))
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = filelock.FileLock(path)
        return lock

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Any = None) -> Iterator[None]:
        """Hold the lock of step ``key`` (waits while another process computes it; reentrant)."""
        lock = self._file_lock(f"{key}.lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """Hold ``locks/<name>`` if nobody else does; yields whether it is held."""
        lock = self._file_lock(name)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def begin_run(self, run_id: str) -> Path:
        """Mark a workflow as running (until :meth:`end_run`) and return its ``runs/`` folder.

        While it runs, every step it takes from or puts into the cache is listed in the
        folder's ``uses.txt``, and ``olivine cache clean`` leaves those steps alone.
        """
        self._file_lock(f"run-{run_id}.lock").acquire()
        self._run_id = run_id
        self._leased = set()
        run_dir = inside(self.root, "runs", run_id, what="run id")
        run_dir.mkdir(parents=True)
        return run_dir

    def end_run(self) -> None:
        """The workflow of :meth:`begin_run` has finished: its steps may be cleaned again."""
        if self._run_id is None:
            return
        (self.root / "runs" / self._run_id / "uses.txt").unlink(missing_ok=True)
        self._file_lock(f"run-{self._run_id}.lock").release()
        self._run_id = None

    def _lease(self, key: str) -> None:
        """Record that the running workflow uses ``key`` (call holding the step's lock)."""
        if self._run_id is None or key in self._leased:
            return
        with (self.root / "runs" / self._run_id / "uses.txt").open("a") as fh:
            fh.write(key + "\n")
        self._leased.add(key)

    def run_is_live(self, run_id: str) -> bool:
        """True while the workflow ``run_id`` is running (in any process)."""
        if run_id == self._run_id:
            return True
        if not (self.root / "locks" / f"run-{run_id}.lock").exists():
            return False
        with self.try_lock(f"run-{run_id}.lock") as free:
            return not free

    def keys_in_use(self) -> set[str]:
        """Steps that running workflows use (read them holding the step's lock)."""
        used: set[str] = set()
        runs = self.root / "runs"
        for run_dir in runs.iterdir() if runs.is_dir() else []:
            uses = run_dir / "uses.txt"
            if uses.is_file() and self.run_is_live(run_dir.name):
                with contextlib.suppress(OSError):
                    used.update(uses.read_text().split())
        return used

    # -- steps --------------------------------------------------------------------------
    def step_dir(self, key: str) -> Path:
        """Where the finished step ``key`` lives."""
        return inside(self.root, "steps", key, what="step key")

    def read_record(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The step record of ``key`` and what is wrong with it (``None`` when it is sound)."""
        folder = self.step_dir(key)
        try:
            record = json.loads((folder / STEP_FILE).read_text())
        except (OSError, ValueError) as exc:
            return None, f"{STEP_FILE} cannot be read ({exc})"
        if not isinstance(record, dict):
            return None, f"{STEP_FILE} does not hold a step record"
        if record.get("record_format") != RECORD_FORMAT or not isinstance(record.get("files"), dict):
            return record, "it was stored by an older olivine, without file sizes and hashes"
        if record.get("record_sha256") != record_checksum(record):
            return record, f"{STEP_FILE} was changed after the step was stored"
        if record.get("key") != key:
            return record, f"{STEP_FILE} belongs to another step"
        return record, None

    def check_files(self, key: str, files: Mapping[str, Any], full: bool = False) -> str | None:
        """What differs between the step folder and the recorded ``files`` (``None``: nothing).

        Sizes are always compared; contents through the hash memo, or by reading every byte
        with ``full``.
        """
        folder = self.step_dir(key)
        found = {f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file()}
        found.discard(STEP_FILE)
        for rel in sorted(set(files) - found):
            return f"{rel} is missing"
        for rel in sorted(found - set(files)):
            return f"{rel} was not written by the step"
        try:
            for rel, want in sorted(files.items()):
                size = (folder / rel).stat().st_size
                if size != want["size"]:
                    return f"{rel} has {size} bytes, {want['size']} were stored"
            for rel, want in sorted(files.items()):
                path = folder / rel
                digest = sha256_file(path) if full else self.file_hash(path)
                if digest != want["sha256"]:
                    return f"{rel} does not have the content that was stored (sha256 differs)"
        except (OSError, KeyError, TypeError) as exc:
            return f"its files cannot be checked ({exc})"
        return None

    def lookup(self, key: str) -> CachedStep | None:
        """The finished, verified step ``key``, or ``None``.

        A folder without step.json does not count. A damaged entry (a file missing,
        truncated or changed, an edited step.json) is removed with a warning, so the step
        is computed again.
        """
        folder = self.step_dir(key)
        if not (folder / STEP_FILE).is_file():
            return None
        with self.lock(key):
            self._lease(key)
            record, problem = self.read_record(key)
            model = None
            if problem is None and record is not None:
                problem = self.check_files(key, record["files"])
                try:
                    model = handle_from_dict(record["output_model"], base=folder)
                except (ValueError, KeyError, TypeError) as exc:
                    problem = problem or f"its model cannot be read ({exc})"
            if problem is not None or record is None or model is None:
                if folder.exists():
                    step = (record or {}).get("step", "?")
                    log.warning("cache entry %s (step %r) is damaged: %s; removing it and computing "
                                "the step again", key[:16], step, problem)
                    self.remove_entry(key)
                return None
        return CachedStep(key, model, str(record["output_id"]), record)

    def remove_entry(self, key: str) -> int:
        """Remove step ``key`` (call holding its lock); returns the bytes freed."""
        folder = self.step_dir(key)
        if not folder.is_dir():
            return 0
        size = tree_size(folder)
        trash = inside(self.root, "tmp", f"{key}.removed.{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return 0
        shutil.rmtree(trash, ignore_errors=True)
        self.forget(folder)
        return size

    def new_work_dir(self, key: str) -> Path:
        """An empty folder for a pass computing ``key`` (``.../output``); call holding its lock."""
        self.ensure()
        for stale in (self.root / "tmp").glob(f"{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = inside(self.root, "tmp", f"{key}.{os.getpid()}.{time.monotonic_ns()}", "output")
        work.mkdir(parents=True)
        return work

    def state_dir(self, key: str) -> Path:
        """A folder for step ``key`` that persists across attempts (checkpoints to resume from)."""
        self.ensure()
        folder = inside(self.root, "state", key, what="step key")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def commit(self, key: str, work_dir: Path, model: ModelHandle, meta: Mapping[str, Any]) -> CachedStep:
        """Record the files' sizes and hashes, move the work folder into place atomically."""
        final = self.step_dir(key)
        staging = work_dir.parent
        model_final = model.rebased(staging, final)
        shutil.rmtree(staging / "io", ignore_errors=True)
        files: dict[str, dict[str, Any]] = {}
        for f in sorted(staging.rglob("*")):
            rel = f.relative_to(staging).as_posix()
            if f.is_file() and rel not in (STEP_FILE, STEP_FILE + ".tmp"):
                files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        record = {**meta, "key": key, "output_id": sha256_text(f"step:{key}"),
                  "output_model": model_final.to_dict(relative_to=final),
                  "created": time.time(), "record_format": RECORD_FORMAT, "files": files}
        record = json.loads(json.dumps(record, default=str))  # the form read back, for the checksum
        record["record_sha256"] = record_checksum(record)
        tmp_meta = staging / (STEP_FILE + ".tmp")
        tmp_meta.write_text(json.dumps(record, indent=2))
        with tmp_meta.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_meta, staging / STEP_FILE)
        with self.lock(key):
            if final.exists():  # left by an older crashed rename, or raced: keep a sound one
                found = self.lookup(key)
                if found is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                    return found
                self.remove_entry(key)
            os.rename(staging, final)
            self._lease(key)
        for rel, info in files.items():
            self.remember(final / rel, info["sha256"])
        shutil.rmtree(self.root / "state" / key, ignore_errors=True)
        return CachedStep(key, model_final, record["output_id"], record)

    def discard(self, work_dir: Path) -> None:
        """Remove a work folder of a failed step (failures are never cached)."""
        shutil.rmtree(work_dir.parent, ignore_errors=True)

    # -- maintenance (olivine.cacheclean does the work) ------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every finished step: key, pass, step name, size, created (or ``None``) and path."""
        from olivine.cacheclean import entries

        return entries(self)

    def clean(self, older_than_s: float | None = None, max_size: int | None = None) -> Any:
        """Remove steps (see :func:`olivine.cacheclean.clean`); returns a CleanReport."""
        from olivine.cacheclean import clean

        return clean(self, older_than_s, max_size)


def tree_size(folder: Path) -> int:
    """Bytes in the files under ``folder``."""
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file():
                total += f.stat().st_size
    return total
