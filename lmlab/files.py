"""Writing cache files so that a crash, or a reader running at the same time, never sees half of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None):
    """Yields a file open on a temporary name beside `path`, renamed onto `path` when the block
    ends without an error (removed if it raises). Two processes writing the same content both
    succeed. The file is world-readable (0644), like any other cached data."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 16 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
