"""The content-addressed step cache.

Layout under ``cache_dir``::

    steps/<key>/          a finished step: step.json and output/ (the model files)
    tmp/<key>.<pid>.<n>/  a step being computed (never read as a result)
    locks/<key>.lock      held while one process computes <key>
    runs/<run_id>/        run.json and summary.txt of every run, failed ones too
    file-hashes.sqlite    content hashes of local input files by path, size and mtime

A step's key is the sha256 of its input model's identity, the pass name and
version, its plugin's version, the resolved config with the files it reads (see
``olivine.inputs``), the accelerator and the versions of the libraries that do
the work. No absolute path enters a key. A step appears in ``steps/`` only by
an atomic rename of a complete folder, so a killed run leaves nothing that a
later run could take for a result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import attrs

from olivine.models import HfModel, ModelHandle, PyTorchModel, handle_from_dict

#: Libraries whose versions enter a step's key when its pass does not name its own.
DEFAULT_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-genai")
STEP_FILE = "step.json"
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


class Cache:
    """One cache folder; safe for several processes at once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        for sub in ("steps", "tmp", "locks", "runs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._db_path = self.root / "file-hashes.sqlite"

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
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", (*stamp, value))
        return value

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
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

    # -- steps --------------------------------------------------------------------------
    def step_dir(self, key: str) -> Path:
        """Where the finished step ``key`` lives."""
        return self.root / "steps" / key

    def lookup(self, key: str) -> CachedStep | None:
        """The finished step ``key``, or ``None`` (a folder without step.json does not count)."""
        folder = self.step_dir(key)
        meta_file = folder / STEP_FILE
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            model = handle_from_dict(meta["output_model"], base=folder)
        except (ValueError, KeyError, OSError):
            return None
        return CachedStep(key, model, meta["output_id"], meta)

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Any = None) -> Iterator[None]:
        """Hold the lock of step ``key`` (waits while another process computes it)."""
        lock_path = self.root / "locks" / f"{key}.lock"
        with lock_path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def new_work_dir(self, key: str) -> Path:
        """An empty folder for a pass computing ``key`` (``.../output``); call holding its lock."""
        for stale in (self.root / "tmp").glob(f"{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = self.root / "tmp" / f"{key}.{os.getpid()}.{time.monotonic_ns()}" / "output"
        work.mkdir(parents=True)
        return work

    def state_dir(self, key: str) -> Path:
        """A folder for step ``key`` that persists across attempts (checkpoints to resume from)."""
        folder = self.root / "state" / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def commit(self, key: str, work_dir: Path, model: ModelHandle, meta: Mapping[str, Any]) -> CachedStep:
        """Move a finished work folder into place atomically and return the cached step."""
        final = self.step_dir(key)
        staging = work_dir.parent
        model_final = model.rebased(staging, final)
        record = {**meta, "key": key, "output_id": sha256_text(f"step:{key}"),
                  "output_model": model_final.to_dict(relative_to=final),
                  "created": time.time()}
        shutil.rmtree(staging / "io", ignore_errors=True)
        tmp_meta = staging / (STEP_FILE + ".tmp")
        tmp_meta.write_text(json.dumps(record, indent=2, default=str))
        with tmp_meta.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_meta, staging / STEP_FILE)
        if final.exists():  # left by an older crashed rename, or raced: keep the complete one
            found = self.lookup(key)
            if found is not None:
                shutil.rmtree(staging, ignore_errors=True)
                return found
            shutil.rmtree(final)
        os.rename(staging, final)
        shutil.rmtree(self.root / "state" / key, ignore_errors=True)
        return CachedStep(key, model_final, record["output_id"], record)

    def discard(self, work_dir: Path) -> None:
        """Remove a work folder of a failed step (failures are never cached)."""
        shutil.rmtree(work_dir.parent, ignore_errors=True)

    # -- maintenance --------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every finished step: key, pass, step name, size and age."""
        rows = []
        for folder in sorted((self.root / "steps").iterdir()):
            found = self.lookup(folder.name)
            if found is None:
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            rows.append({"key": found.key, "pass": found.meta.get("pass"),
                         "step": found.meta.get("step"), "size_bytes": size,
                         "created": found.meta.get("created"), "path": str(folder)})
        return rows

    def clean(self, older_than_s: float | None = None) -> tuple[int, int]:
        """Remove finished steps (all, or those older than ``older_than_s``) and stale temp folders.

        Returns ``(steps removed, bytes freed)``. Steps being computed are left alone.
        """
        removed, freed = 0, 0
        now = time.time()
        for row in self.entries():
            if older_than_s is not None and now - float(row["created"] or now) < older_than_s:
                continue
            with self.lock(row["key"]):
                freed += row["size_bytes"]
                shutil.rmtree(row["path"], ignore_errors=True)
                removed += 1
        if older_than_s is None:
            shutil.rmtree(self.root / "state", ignore_errors=True)
        for stale in (self.root / "tmp").iterdir():
            key = stale.name.split(".")[0]
            lock_path = self.root / "locks" / f"{key}.lock"
            with lock_path.open("a+") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
                fcntl.flock(fh, fcntl.LOCK_UN)
        return removed, freed

