"""Publish the final model into ``output_dir`` atomically, and never delete what olivine did not write.

Everything is written into a staging folder beside ``output_dir`` and renamed into
place at the end, so ``output_dir`` never holds half a result. ``run.json`` in the
output lists every other file olivine published there (``files``: name, size,
sha256). A later run replaces the folder only when it holds exactly those files with
that content; anything else (a file a user added, a published file that changed, a
folder with a ``run.json`` copied from elsewhere) is refused, naming the files, and
nothing is written. An existing empty folder that olivine did not create is kept:
the files are moved into it, and reruns swap its contents, never the folder.

Publishing holds a lock beside the output (``.<name>.olivine-lock``), so concurrent
runs into one folder publish one after the other. Leftovers of a run killed while
publishing (``.<name>.olivine-staging-*``, ``.<name>.olivine-old-*``) are cleared (or
the previous output restored) by the next run that checks the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from olivine.errors import OlivineError, UsageError
from olivine.models import CompositeModel, ModelHandle, OnnxModel
from olivine.safepath import inside, is_inside

REPORT = "run.json"
#: The key of run.json that lists the published files.
FILES_KEY = "files"
#: run.json's record of whether olivine created the output folder (else its contents are swapped).
FOLDER_KEY = "output_folder"


class HashMemo(Protocol):
    """Content hashes remembered by path, size and mtime (the cache provides them)."""

    def file_hash(self, path: Path) -> str:
        """sha256 of a file."""

    def remember(self, path: Path, sha256: str) -> None:
        """Enter a known hash."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _read_report(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / REPORT).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_olivine_output(folder: Path) -> bool:
    """True when ``folder`` holds a run.json written by olivine."""
    data = _read_report(folder)
    return data is not None and "olivine_version" in data


def foreign_files(folder: Path, hasher: Callable[[Path], str] | None = None) -> list[str] | None:
    """Entries of ``folder`` that its run.json does not list as published (or that changed).

    ``None`` when the folder has no run.json with a file list (not olivine's output).
    """
    data = _read_report(folder)
    listed = data.get(FILES_KEY) if data is not None and "olivine_version" in data else None
    if not isinstance(listed, dict):
        return None
    hasher = hasher or _sha256
    out = []
    dirs = {p for rel in listed for p in Path(rel).parents if str(p) != "."}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel == REPORT:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            out.append(rel)
        elif path.is_dir():
            if Path(rel) not in dirs:
                out.append(rel + "/")
        elif rel not in listed:
            out.append(rel)
    for rel, want in sorted(listed.items()):
        path = folder / rel
        try:
            if not isinstance(want, dict) or path.is_symlink() or not path.is_file():
                raise OSError
            if path.stat().st_size != want.get("size") or hasher(path) != want.get("sha256"):
                out.append(f"{rel} (changed since olivine wrote it)")
        except OSError:
            if path.exists() or path.is_symlink():
                out.append(f"{rel} (changed since olivine wrote it)")
    return out


@contextlib.contextmanager
def publish_lock(output_dir: Path) -> Iterator[None]:
    """Hold the lock of ``output_dir`` (beside it); waits while another run publishes there."""
    import filelock

    with filelock.FileLock(str(_lock_path(output_dir))):
        yield


def _lock_path(output_dir: Path) -> Path:
    return inside(output_dir.parent, f".{output_dir.name}.olivine-lock")


def _clear_leftovers(output_dir: Path) -> None:
    """Finish what a run killed while publishing left (call holding the publish lock)."""
    parent = output_dir.parent
    for old in sorted(parent.glob(f".{output_dir.name}.olivine-old-*")):
        if not output_dir.exists():
            os.rename(old, output_dir)  # killed between the two renames: the old output comes back
        elif (output_dir / REPORT).is_file():
            shutil.rmtree(old, ignore_errors=True)  # the new output is complete
        else:  # killed while swapping a kept folder's contents: put the old files back
            for entry in sorted(old.iterdir()):
                target = output_dir / entry.name
                if not target.exists():
                    os.rename(entry, target)
            shutil.rmtree(old, ignore_errors=True)
    for staging in parent.glob(f".{output_dir.name}.olivine-staging-*"):
        shutil.rmtree(staging, ignore_errors=True)


def _check_unlocked(output_dir: Path, hasher: Callable[[Path], str] | None) -> None:
    for parent in output_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"output folder {str(output_dir)!r}: {str(parent)!r} is a file, not a "
                             "folder; choose another output path")
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output path {str(output_dir)!r} is a file; give a folder path")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not is_olivine_output(output_dir):
        raise UsageError(f"output folder {str(output_dir)!r} exists and was not made by olivine "
                         "(no run.json); choose another output path or empty it")
    foreign = foreign_files(output_dir, hasher)
    if foreign is None:
        raise UsageError(f"output folder {str(output_dir)!r} was made by an older olivine that kept no "
                         "list of the files it wrote; move it away or choose another output path")
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise UsageError(f"output folder {str(output_dir)!r} holds files olivine did not write there: "
                         f"{shown}; move them out or choose another output path (nothing was written)")


def check_output_dir(output_dir: Path, hasher: Callable[[Path], str] | None = None) -> None:
    """Refuse an output folder olivine may not replace; clear a killed run's leftovers.

    A folder may be replaced when it is missing, empty, or holds exactly the files its
    run.json lists with the content they had when published.
    """
    output_dir = Path(output_dir)
    # only a folder published into before has a lock file (and maybe leftovers); without one,
    # nothing is written here, so a refused run leaves the parent folder as it was
    try:
        if _lock_path(output_dir).exists():
            with publish_lock(output_dir):
                _clear_leftovers(output_dir)
                _check_unlocked(output_dir, hasher)
        else:
            _check_unlocked(output_dir, hasher)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise UsageError(f"output folder {str(output_dir)!r}: {exc.strerror or exc}{where}") from None


def _link_or_copy(src: Path, dst: Path, copied: dict[Path, Path]) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    copied[dst] = src


def _copy_model(model: ModelHandle, dest: Path, copied: dict[Path, Path]) -> ModelHandle:
    """Copy ``model``'s files under ``dest``; return the handle pointing there."""
    if isinstance(model, CompositeModel) and model.holds_components():
        src = Path(model.path)  # one folder (Whisper's encoder.onnx and decoder.onnx): kept as it is
        for f in model.files():
            _link_or_copy(f, inside(dest, f.relative_to(src), what="model file"), copied)
        return model.rebased(src, dest)
    if isinstance(model, CompositeModel):
        parts = tuple((name, _copy_model(h, inside(dest, name, what="component name"), copied))
                      for name, h in model.components)
        return CompositeModel(path=str(dest), components=parts, attributes=model.attributes)
    src = Path(model.path)
    if not src.exists():  # a hub id: nothing to copy
        return model
    if src.is_file():
        for f in model.files():
            _link_or_copy(f, inside(dest, f.name, what="model file"), copied)
        return model.rebased(src.parent, dest)
    for f in model.files():
        _link_or_copy(f, inside(dest, f.relative_to(src), what="model file"), copied)
    if isinstance(model, OnnxModel) and model.onnx_file_name is None:
        try:
            name = model.model_file().name
            return OnnxModel(path=str(dest), onnx_file_name=name, attributes=model.attributes)
        except FileNotFoundError:
            pass
    return model.rebased(src, dest)


def _manifest(staging: Path, copied: dict[Path, Path], memo: HashMemo | None) -> dict[str, Any]:
    """Name, size and sha256 of every staged file (a copy's hash from its source's memo)."""
    out = {}
    for path in sorted(staging.rglob("*")):
        if not path.is_file():
            continue
        src = copied.get(path)
        digest = memo.file_hash(src) if src is not None and memo is not None else _sha256(path)
        out[path.relative_to(staging).as_posix()] = {"size": path.stat().st_size, "sha256": digest}
    return out


def _swap_contents(staging: Path, output_dir: Path, old: Path, listed: list[str]) -> None:
    """Replace the published files of a kept folder (run.json out first, in last)."""
    old.mkdir()
    tops = sorted({rel.split("/")[0] for rel in listed}, key=lambda n: n != REPORT)
    for name in tops:
        if (output_dir / name).exists():
            os.rename(output_dir / name, old / name)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == REPORT):
        os.rename(entry, output_dir / entry.name)
    staging.rmdir()


def publish(output_dir: Path, model: ModelHandle, report: dict[str, Any], summary: str = "",
            extras: list[Path] | None = None, memo: HashMemo | None = None) -> ModelHandle:
    """Write the model files and ``run.json`` (with the file list) into ``output_dir``.

    Refuses (UsageError) a folder that gained files olivine did not write since the run
    started. An OSError (a full disk) becomes an OlivineError; nothing is left behind
    and an existing output is unchanged.
    """
    output_dir = output_dir.resolve()
    hasher = memo.file_hash if memo is not None else None
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        with publish_lock(output_dir):
            _clear_leftovers(output_dir)
            _check_unlocked(output_dir, hasher)
            return _publish_locked(output_dir, model, report, summary, extras or [], memo)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise OlivineError(f"could not publish the output to {str(output_dir)!r}: "
                           f"{exc.strerror or exc}{where}; nothing was written there") from None


def _publish_locked(output_dir: Path, model: ModelHandle, report: dict[str, Any], summary: str,
                    extras: list[Path], memo: HashMemo | None) -> ModelHandle:
    parent = output_dir.parent
    staging = inside(parent, f".{output_dir.name}.olivine-staging-{os.getpid()}")
    old = inside(parent, f".{output_dir.name}.olivine-old-{os.getpid()}")
    existing = _read_report(output_dir) if output_dir.is_dir() else None
    # an existing folder olivine did not create (empty now, or kept before) keeps its identity
    kept = output_dir.is_dir() and (existing is None or existing.get(FOLDER_KEY) == "kept")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        copied: dict[Path, Path] = {}
        staged = _copy_model(model, staging, copied)
        final = staged.rebased(staging, output_dir)
        if summary:
            (staging / "summary.txt").write_text(summary)
        for extra in extras:
            shutil.copy2(extra, inside(staging, extra.name, what="report file"))
        files = _manifest(staging, copied, memo)
        report = {**report, "output_model": final.to_dict(relative_to=output_dir),
                  "output_dir": str(output_dir), FILES_KEY: files,
                  FOLDER_KEY: "kept" if kept else "created"}
        (staging / REPORT).write_text(json.dumps(report, indent=2, default=str))
        if kept:
            _swap_contents(staging, output_dir, old, [*(existing or {}).get(FILES_KEY, {}), REPORT])
        else:
            if output_dir.exists():
                os.rename(output_dir, old)
            os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if memo is not None:
        for rel, info in files.items():
            with contextlib.suppress(OSError):
                memo.remember(output_dir / rel, info["sha256"])
    return final


def record_file(output_dir: Path, path: Path) -> None:
    """Add a file written into a published output after the run (``--save_config``) to its list."""
    output_dir = output_dir.resolve()
    data = _read_report(output_dir)
    if data is None or not isinstance(data.get(FILES_KEY), dict):
        return
    try:
        rel = path.resolve().relative_to(output_dir).as_posix()
    except ValueError:
        return
    data[FILES_KEY][rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    tmp = inside(output_dir, f".{REPORT}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, output_dir / REPORT)


def check_apart(output_dir: Path, cache_dir: Path) -> None:
    """Refuse a cache folder inside the output folder, or the reverse (publishing replaces the output)."""
    if is_inside(cache_dir, output_dir) or is_inside(output_dir, cache_dir):
        raise UsageError(f"cache_dir {str(cache_dir)!r} and output_dir {str(output_dir)!r} overlap (one "
                         "is inside the other); publishing replaces the output folder, and a cache "
                         "must not hold outputs. Give two separate folders")
