"""Cache identities: content hashes remembered by path, size and mtime; full-length keys."""

from __future__ import annotations

import os
from pathlib import Path

from olivine.cache import Cache
from olivine.models import HfModel, OnnxModel


def test_file_hash_is_remembered_until_size_or_mtime_change(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 1000)
    first = cache.file_hash(weights)
    st = weights.stat()
    # same size and mtime, other content: the remembered hash is used (no re-read)
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.file_hash(weights) == first
    # a new mtime makes it read the file again
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.file_hash(weights) != first
    # and a second Cache object on the same folder shares the memo
    assert Cache(tmp_path / "cache").file_hash(weights) == cache.file_hash(weights)


def test_model_identity_follows_content_not_location(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"graph")
        (tmp_path / name / "model.onnx.data").write_bytes(b"weights")
    a = cache.model_identity(OnnxModel(path=str(tmp_path / "a")))
    b = cache.model_identity(OnnxModel(path=str(tmp_path / "b")))
    assert a == b and len(a) == 64
    (tmp_path / "b" / "model.onnx.data").write_bytes(b"weightz")
    assert cache.model_identity(OnnxModel(path=str(tmp_path / "b"))) != a


def test_hub_models_are_identified_by_id_and_revision(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    main = cache.model_identity(HfModel(path="org/model"))
    pinned = cache.model_identity(HfModel(path="org/model", load_kwargs={"revision": "abc123"}))
    other = cache.model_identity(HfModel(path="org/other"))
    assert len({main, pinned, other}) == 3
    assert cache.model_identity(HfModel(path="org/model")) == main
