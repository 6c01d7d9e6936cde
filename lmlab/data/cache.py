"""Where lmlab keeps downloaded and derived data."""

from __future__ import annotations

import os
import pathlib

CACHE_ENV_VAR = "LMLAB_CACHE"


def cache_dir() -> pathlib.Path:
    """Return the cache root: ``$LMLAB_CACHE`` if set, else ``~/.cache/lmlab``.

    The directory is created on demand so callers can write into it directly.
    """
    override = os.environ.get(CACHE_ENV_VAR, "").strip()
    # An empty variable is treated as unset: `LMLAB_CACHE= cmd` should not mean "the cwd".
    root = pathlib.Path(override).expanduser() if override else pathlib.Path.home() / ".cache" / "lmlab"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = (f"{CACHE_ENV_VAR}={override}" if override
                 else f"the cache directory {root} (set {CACHE_ENV_VAR} to use another)")
        problem = "exists and is not a directory" if root.exists() and not root.is_dir() else (e.strerror or str(e))
        raise OSError(f"{where}: {problem}; it must be a directory lmlab can create and write") from None
    return root
