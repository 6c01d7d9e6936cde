"""Token ids on disk: a raw little-endian ``.bin`` plus a ``.json`` sidecar, read by memory map.

``write_token_file("train.bin", ids, vocab_size=V)`` writes ``train.bin`` (uint16 when
every id fits, i.e. ``V <= 65536``, else uint32) and ``train.bin.json``::

    {"dtype": "uint16", "n_tokens": 1234, "vocab_size": 50257, "sha256": "...",
     "verified": {"size": 2468, "mtime_ns": ..., "ctime_ns": ..., "inode": ...}}

``verified`` notes the file's state when its sha256 was last checked: reads hash the file again
only when it changed since (an overwrite with in-range ids of the same length is caught).

Raw bytes (no .npy header) keep the file trivially readable from any language and let
``np.memmap`` serve random windows of a file larger than memory without loading it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import pathlib
import tempfile
from typing import Any, Union

import numpy as np

from lmlab.files import sha256_file

PathLike = Union[str, "os.PathLike[str]"]

_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_CHUNK_TOKENS = 1 << 22  # converted and hashed piecewise so a huge array is never copied whole


def metadata_path(path: PathLike) -> pathlib.Path:
    """``train.bin`` -> ``train.bin.json``."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest supported little-endian unsigned dtype holding ids ``0..vocab_size-1``."""
    if not 0 < vocab_size <= 1 << 32:
        raise ValueError(f"vocab_size must be in 1..{1 << 32}, got {vocab_size}")
    return _DTYPES["uint16"] if vocab_size <= 1 << 16 else _DTYPES["uint32"]


def _check_ids(ids: np.ndarray, vocab_size: int) -> None:
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    # An empty list arrives as float64; there is nothing to misread in it.
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"ids must lie in [0, {vocab_size}), got min {int(ids.min())}, max {int(ids.max())}"
        )


def _temp_file(final: pathlib.Path) -> tuple[int, str]:
    # Same directory as the final file, so os.replace is an atomic rename, not a copy.
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.chmod(name, 0o644)  # mkstemp's 0600 would make shared datasets unreadable to others
    return fd, name


def write_token_file(path: PathLike, ids: Any, *, vocab_size: int) -> None:
    """Write ``ids`` (1-D ints in ``[0, vocab_size)``) to ``path`` and ``path.json``.

    Atomic per file: data and metadata go to temp files that are renamed into place
    only once complete, so a crash never leaves a truncated file under the final name.
    The old metadata is removed before the new data is renamed in, so a crash between
    the two renames leaves a ``.bin`` without ``.json`` (which readers reject) rather
    than a new ``.bin`` next to stale metadata.
    """
    path = pathlib.Path(path)
    dtype = token_dtype(vocab_size)
    ids = np.asarray(ids)
    _check_ids(ids, vocab_size)
    meta_path = metadata_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    temps: list[str] = []
    try:
        fd, data_tmp = _temp_file(path)
        temps.append(data_tmp)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            for start in range(0, ids.size, _CHUNK_TOKENS):
                chunk = ids[start : start + _CHUNK_TOKENS].astype(dtype, copy=False).tobytes()
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

        metadata = {
            "dtype": dtype.name,
            "n_tokens": int(ids.size),
            "vocab_size": int(vocab_size),
            "sha256": digest.hexdigest(),
        }
        fd, meta_tmp = _temp_file(meta_path)
        temps.append(meta_tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

        meta_path.unlink(missing_ok=True)
        os.replace(data_tmp, path)
        temps.remove(data_tmp)
        os.replace(meta_tmp, meta_path)
        temps.remove(meta_tmp)
        _record_verified(path, metadata, _file_stamp(path))  # just hashed: the first read need not
    finally:
        for leftover in temps:
            pathlib.Path(leftover).unlink(missing_ok=True)


def read_token_metadata(path: PathLike) -> dict[str, Any]:
    """The ``.json`` sidecar of ``path`` (dtype, n_tokens, vocab_size, sha256)."""
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: metadata for token file {path} is missing")
    try:
        with open(meta_path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: corrupt token-file metadata ({e})") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{meta_path}: corrupt token-file metadata (expected a JSON object)")
    missing = {"dtype", "n_tokens", "vocab_size", "sha256"} - set(metadata)
    # isinstance first: an unhashable dtype (a list, an object) would raise TypeError in the lookup.
    if missing or not isinstance(metadata["dtype"], str) or metadata["dtype"] not in _DTYPES:
        raise ValueError(
            f"{meta_path}: not token-file metadata (missing {sorted(missing)} or "
            f"dtype {metadata.get('dtype')!r} not in {sorted(_DTYPES)})"
        )
    for key in ("n_tokens", "vocab_size"):
        if isinstance(metadata[key], bool) or not isinstance(metadata[key], int) or metadata[key] < 0:
            raise ValueError(f"{meta_path}: corrupt token-file metadata ({key} {metadata[key]!r})")
    return metadata


def _file_stamp(path: pathlib.Path) -> dict[str, int]:
    """What changes whenever the file's bytes may have: ctime cannot be set back, unlike mtime."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _record_verified(path: pathlib.Path, metadata: dict[str, Any], stamp: dict[str, int]) -> None:
    """Notes in the metadata that `path` with this stamp matched its sha256, so later opens skip
    the hash. Best effort: in a read-only directory every open verifies again."""
    meta_path = metadata_path(path)
    try:
        fd, tmp = _temp_file(meta_path)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**metadata, "verified": stamp}, f, indent=2)
            f.write("\n")
        os.replace(tmp, meta_path)
    except OSError:
        pathlib.Path(tmp).unlink(missing_ok=True)



def verify_token_file(path: PathLike, metadata: dict[str, Any] | None = None, *, force: bool = False) -> None:
    """Raises ValueError naming `path` if its bytes do not hash to the metadata's sha256.

    Hashes only when the file changed (size, mtime, ctime or inode) since it was last verified,
    or with `force`; a file written by write_token_file counts as verified.
    """
    path = pathlib.Path(path)
    metadata = read_token_metadata(path) if metadata is None else metadata
    before = _file_stamp(path)
    if not force and metadata.get("verified") == before:
        return
    actual = sha256_file(path)
    if actual != metadata["sha256"]:
        raise ValueError(
            f"{path}: contents changed since it was written (sha256 {actual[:16]}... does not match "
            f"{metadata['sha256'][:16]}... in {metadata_path(path).name}); the file is corrupt "
            f"(delete {path.parent} to rebuild it)"
        )
    if _file_stamp(path) == before:  # not rewritten while it was being hashed
        _record_verified(path, {k: v for k, v in metadata.items() if k != "verified"}, before)


def read_token_file(path: PathLike, *, verify: bool | None = None) -> np.ndarray:
    """Memory-map the tokens in ``path`` read-only (an ``np.memmap`` of uint16 or uint32).

    The file size is always checked against the metadata (cheap, and catches truncated
    copies). The sha256 is checked too (verify_token_file): by default only when the file
    changed since it was last verified, which reads the whole file once; ``verify=True``
    always, ``verify=False`` never. An empty token file yields an empty read-only array
    (an empty file cannot be mapped).
    """
    path = pathlib.Path(path)
    metadata = read_token_metadata(path)
    dtype = _DTYPES[metadata["dtype"]]
    n_tokens = int(metadata["n_tokens"])
    expected = n_tokens * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{path}: size {actual} bytes, expected {expected} "
            f"({n_tokens} {dtype.name} tokens per {metadata_path(path).name})"
        )
    if verify is not False:
        verify_token_file(path, metadata, force=bool(verify))
    if n_tokens == 0:
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))


def release_pages(tokens: np.ndarray) -> None:
    """Unmaps the pages of a memory-mapped token array read so far from this process (they stay in
    the page cache, and a later read maps them again): mapped file pages count as the process's
    resident memory, which would otherwise grow towards the file's size. Other arrays: no-op."""
    mapping = getattr(tokens, "_mmap", None)  # np.memmap's mmap object, shared by its slices
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


def max_token(tokens: np.ndarray) -> int:
    """The largest id in `tokens` (-1 if empty), read piecewise with `release_pages` after each
    piece: a token file larger than memory is scanned at a flat resident size."""
    top = -1
    for start in range(0, len(tokens), _CHUNK_TOKENS):
        top = max(top, int(tokens[start:start + _CHUNK_TOKENS].max()))
        release_pages(tokens)
    return top
