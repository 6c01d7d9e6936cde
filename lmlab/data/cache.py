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
    root.mkdir(parents=True, exist_ok=True)
    return root
