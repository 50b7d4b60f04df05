"""A shared step cache for teams: finished steps of the local cache, copied to and from any
place fsspec reaches (a shared folder, ``s3://``, ``az://``/``abfs://``, ``gs://``, ...).

Layout under the shared location::

    OLIVINE-SHARED-CACHE      written by the first upload: marks the location as olivine's
    steps/<key>/step.json     the step record, exactly as in the local cache (sizes, sha256s,
                              its own checksum); uploaded last, so it marks a complete entry
    steps/<key>/<files>       the step's files under the same relative names

Entries have the keys of the local cache (:meth:`olivine.cache.Cache.step_key`), which hold
no absolute path, so two machines with different folders compute the same key for the same
step. The engine looks a step up here after a local miss and before computing it
(:meth:`SharedCache.fetch`): the files are downloaded into the local cache's staging folder,
each checked against the size and sha256 its record states, and the entry enters the local
cache by the same atomic rename a computed step does, where the local checks run once more.
A computed step is uploaded after it is committed locally (:meth:`SharedCache.upload`).
A shared cache that cannot be reached, or a damaged entry, is a warning: the step is computed.

The engine options are olivine's ``shared_cache`` (a URL, or ``{path, storage_options,
update_shared_cache}``) and Olive's forms: ``enable_shared_cache`` and ``cache_config``
(``account_name``, ``container_name``, a ``https://ACCOUNT.blob.core.windows.net/CONTAINER``
entry of ``cache_dir``), which name an Azure Blob container (through ``adlfs``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from olivine.cache import RECORD_FORMAT, STEP_FILE, Cache, CachedStep, created_time, record_checksum
from olivine.errors import UsageError
from olivine.safepath import inside

log = logging.getLogger("olivine.sharedcache")

#: The file an olivine shared cache holds at its root.
REMOTE_MARKER = "OLIVINE-SHARED-CACHE"
_MARKER_TEXT = "olivine shared step cache: steps/<key>/ are entries olivine wrote\n"
_KEY = re.compile(r"^[0-9a-f]{64}$")
#: Olive's public shared cache (``enable_shared_cache`` without an account).
OLIVE_DEFAULT_ACCOUNT, OLIVE_DEFAULT_CONTAINER = "olivepublicmodels", "olivecachemodels"
_AZURE_URL = re.compile(r"^https://([^.]+)\.blob\.core\.windows\.net/([^/]+)")
#: The fsspec implementation each protocol needs, for the message when it is missing.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
             "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs"}
_CHUNK = 1 << 22


def is_azure_cache_dir(value: object) -> bool:
    """True for Olive's shared-cache form of a ``cache_dir`` entry (an Azure Blob container URL)."""
    return isinstance(value, str) and bool(_AZURE_URL.match(value))


def azure_target(account: str, container: str) -> tuple[str, dict[str, Any]]:
    """The fsspec URL and options of an Azure Blob container (Olive's account and container)."""
    return f"az://{container}", {"account_name": account}


def engine_target(engine: Any) -> tuple[str, dict[str, Any], bool] | None:
    """``(url, storage_options, update)`` of the shared cache an engine config names, or ``None``."""
    own = getattr(engine, "shared_cache", None)
    olive = getattr(engine, "cache_config", None)
    olive_target = None
    if olive is not None:
        account, container = olive.account_name, olive.container_name
        dirs = olive.cache_dir if isinstance(olive.cache_dir, list) else [olive.cache_dir]
        for entry in dirs:
            m = _AZURE_URL.match(str(entry or ""))
            if m:
                account, container = account or m[1], container or m[2]
        if (account and container) or olive.enable_shared_cache:
            url, options = azure_target(account or OLIVE_DEFAULT_ACCOUNT,
                                        container or OLIVE_DEFAULT_CONTAINER)
            olive_target = (url, options, bool(olive.update_shared_cache))
    elif getattr(engine, "enable_shared_cache", False):
        url, options = azure_target(OLIVE_DEFAULT_ACCOUNT, OLIVE_DEFAULT_CONTAINER)
        olive_target = (url, options, True)
    if own is not None and olive_target is not None:
        raise UsageError("engine.shared_cache and Olive's shared cache (cache_config / "
                         "enable_shared_cache) are both set; keep one")
    if own is None:
        return olive_target
    if isinstance(own, str):
        return own, {}, True
    return own.path, dict(own.storage_options), bool(own.update_shared_cache)


def local_cache_dir(engine: Any) -> str | None:
    """The local folder among Olive's ``cache_config.cache_dir`` entries (``None``: not given)."""
    olive = getattr(engine, "cache_config", None)
    if olive is None or olive.cache_dir is None:
        return None
    dirs = olive.cache_dir if isinstance(olive.cache_dir, list) else [olive.cache_dir]
    local = [d for d in dirs if not is_azure_cache_dir(d)]
    return str(local[0]) if local else None


def open_filesystem(url: str, storage_options: Mapping[str, Any], flag: str) -> tuple[Any, str]:
    """``(filesystem, root path)`` for ``url``; a UsageError naming ``flag`` when it cannot be used."""
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"{flag}: a shared cache needs fsspec: pip install 'olivine[shared-cache]'") \
            from None
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options))
    except ImportError as exc:
        package = _PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        raise UsageError(f"{flag}: {url!r} needs {package} ({exc}); pip install {package}") from None
    except ValueError as exc:
        raise UsageError(f"{flag}: {url!r} is not a location fsspec can open: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"{flag}: storage options {sorted(storage_options)} do not fit "
                         f"{protocol}://: {exc}") from None
    return fs, str(root).rstrip("/") or "/"


def safe_relative(name: object) -> str | None:
    """Why ``name`` (a file name from a step record) is not a safe relative path, or ``None``."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return "is not a plain relative file name"
    path = PurePosixPath(name)
    if path.is_absolute() or any(p in ("", ".", "..") for p in name.split("/")) or ":" in path.parts[0]:
        return "leads outside the step folder"
    return None


def check_record(record: object, key: str) -> str | None:
    """What is wrong with a step record read from a shared cache (``None``: nothing)."""
    if not isinstance(record, dict):
        return f"{STEP_FILE} does not hold a step record"
    if record.get("record_format") != RECORD_FORMAT or not isinstance(record.get("files"), dict):
        return f"{STEP_FILE} has another record format"
    if record.get("record_sha256") != record_checksum(record):
        return f"{STEP_FILE} was changed after the step was stored"
    if record.get("key") != key:
        return f"{STEP_FILE} belongs to another step"
    for name, info in record["files"].items():
        problem = safe_relative(name)
        if problem is None and name == STEP_FILE:
            problem = "is the record's own name"
        if problem is not None:
            return f"file {name!r} of the record {problem}"
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) \
                or not isinstance(info.get("sha256"), str):
            return f"file {name!r} of the record has no size and sha256"
    return None


class SharedCache:
    """One shared cache location (see the module docstring)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None,
                 update: bool = True, flag: str = "shared_cache") -> None:
        self.url = url
        self.update = update
        self.fs, self.root = open_filesystem(url, storage_options or {}, flag)
        self.damaged: set[str] = set()  # entries found damaged: replaced by the next upload

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root != "/" else "/" + "/".join(parts)

    def entry(self, key: str) -> str:
        """Where entry ``key`` lives (``key`` must be a full step key)."""
        if not _KEY.match(key):
            raise UsageError(f"{key!r} is not a step key (64 hex digits)")
        return self._path("steps", key)

    # -- the engine's two calls --------------------------------------------------------------
    def fetch(self, cache: Cache, key: str) -> CachedStep | None:
        """Download entry ``key`` into ``cache`` (verified) and return it; ``None`` on a miss.

        Call holding the step's lock. A damaged or unreachable entry is a warning and a miss.
        """
        try:
            raw = self.fs.cat_file(self._path("steps", key, STEP_FILE))
        except FileNotFoundError:
            return None
        except Exception as exc:  # a network or permission problem: compute instead
            log.warning("shared cache %s cannot be read (%s: %s); computing the step", self.url,
                        type(exc).__name__, exc)
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        problem = check_record(record, key)
        if problem is not None:
            self.damaged.add(key)
            log.warning("shared cache entry %s is damaged: %s; computing the step", key[:16], problem)
            return None
        assert isinstance(record, dict)
        work = cache.new_work_dir(key)
        staging = work.parent
        try:
            problem = self._download(record["files"], key, staging)
        except Exception as exc:
            problem = f"download failed ({type(exc).__name__}: {exc})"
        if problem is not None:
            cache.discard(work)
            self.damaged.add(key)
            log.warning("shared cache entry %s is damaged: %s; computing the step", key[:16], problem)
            return None
        (staging / STEP_FILE).write_bytes(raw)
        final = cache.step_dir(key)
        with cache.lock(key):
            if final.exists():
                cache.remove_entry(key)
            os.rename(staging, final)
        for rel, info in record["files"].items():
            cache.remember(final / rel, info["sha256"])
        found = cache.lookup(key)  # the local cache's own checks, as for any entry
        if found is not None:
            log.info("step %s (%s) came from the shared cache %s", record.get("step", "?"),
                     key[:16], self.url)
        return found

    def _download(self, files: Mapping[str, Any], key: str, staging: Path) -> str | None:
        for rel, info in sorted(files.items()):
            dest = inside(staging, *rel.split("/"), what="file of a shared cache entry")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._path("steps", key, rel), str(dest))
            size = dest.stat().st_size
            if size != info["size"]:
                return f"{rel} has {size} bytes, {info['size']} were stored"
            if _sha256(dest) != info["sha256"]:
                return f"{rel} does not have the content that was stored (sha256 differs)"
        return None

    def upload(self, cache: Cache, step: CachedStep) -> bool:
        """Copy the committed local step to the shared cache (unless it holds it already).

        Files first, the record last. Returns whether anything was uploaded; a failure is a
        warning (the step is done locally all the same).
        """
        if not self.update:
            return False
        key = step.key
        try:
            if key not in self.damaged and self.fs.exists(self._path("steps", key, STEP_FILE)):
                return False
            folder = cache.step_dir(key)
            record = json.loads((folder / STEP_FILE).read_text())
            for rel in sorted(record["files"]):
                self.fs.makedirs(self._path("steps", key, *rel.split("/")[:-1]), exist_ok=True)
                self.fs.put_file(str(folder / rel), self._path("steps", key, rel))
            self.fs.put_file(str(folder / STEP_FILE), self._path("steps", key, STEP_FILE))
            if not self.fs.exists(self._path(REMOTE_MARKER)):
                self.fs.pipe_file(self._path(REMOTE_MARKER), _MARKER_TEXT.encode())
        except Exception as exc:
            log.warning("step %s could not be uploaded to the shared cache %s (%s: %s)", key[:16],
                        self.url, type(exc).__name__, exc)
            return False
        log.info("step %s uploaded to the shared cache %s", key[:16], self.url)
        return True

    # -- maintenance (olivine shared-cache) --------------------------------------------------
    def _keys(self) -> Iterator[str]:
        steps = self._path("steps")
        self.fs.invalidate_cache()
        try:
            listed = self.fs.ls(steps, detail=False)
        except FileNotFoundError:
            return
        for path in sorted(listed):
            name = str(path).rstrip("/").rsplit("/", 1)[-1]
            if _KEY.match(name):
                yield name

    def _record(self, key: str) -> dict[str, Any] | None:
        """The entry's record when olivine wrote it (a sound step record), else ``None``."""
        try:
            record = json.loads(self.fs.cat_file(self._path("steps", key, STEP_FILE)))
        except (FileNotFoundError, ValueError):
            return None
        return record if check_record(record, key) is None else None

    def entries(self) -> list[dict[str, Any]]:
        """Every entry olivine wrote: key, pass, step, size, created, output id."""
        rows = []
        for key in self._keys():
            record = self._record(key)
            if record is None:
                continue
            rows.append({"key": key, "pass": record.get("pass", "?"), "step": record.get("step", "?"),
                         "size_bytes": sum(int(f["size"]) for f in record["files"].values()),
                         "created": created_time(record), "output_id": record.get("output_id")})
        return rows

    def delete(self, key: str) -> bool:
        """Remove entry ``key`` if olivine wrote it: the record first (readers then see a miss),
        then the files it lists, then what is left of its folder. Returns whether it was removed."""
        record = self._record(key)
        if record is None:
            return False
        self.fs.rm_file(self._path("steps", key, STEP_FILE))
        for rel in sorted(record["files"]):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path("steps", key, rel))
        with contextlib.suppress(FileNotFoundError, OSError):
            left = self.fs.find(self._path("steps", key))
            if not left:
                self.fs.rm(self._path("steps", key), recursive=True)
        return True

    def matching(self, prefix: str) -> list[dict[str, Any]]:
        """Entries whose key or output id starts with ``prefix``."""
        return [r for r in self.entries()
                if r["key"].startswith(prefix) or str(r["output_id"] or "").startswith(prefix)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def for_engine(engine: Any) -> SharedCache | None:
    """The shared cache of an engine config (opened), or ``None`` when it names none."""
    target = engine_target(engine)
    if target is None:
        return None
    url, options, update = target
    return SharedCache(url, options, update)

