"""A user's own text as documents, from a path: no code, no registry entry.

`data.corpus` may name

  * a text file (one document: `notes.txt`, `book.md`, any UTF-8 file);
  * a folder: every non-hidden file under it, recursively, one document per file;
  * a glob (`data/**/*.txt`, `shards/*.jsonl.gz`): the files it matches;
  * a `.jsonl` / `.jsonl.gz` file of `{"text": "..."}` lines, one document per line (the format
    of HF datasets' text corpora); other keys are ignored.

Files matched by a folder or glob are read by their suffix the same way. Every problem is one error
naming the file (and line): a folder with no files, a binary file, a JSON line without "text".
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib

from lmlab.data.jsonl import read_objects

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
_GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class Document:
    name: str   # where it came from: a relative path, or "file.jsonl:LINE"
    text: str
    key: str    # what the held-out split hashes: a file's name, a JSON line's text


def is_path_spec(spec: str) -> bool:
    """Whether `data.corpus` names files rather than a registered corpus."""
    return (any(c in spec for c in _GLOB_CHARS) or os.sep in spec or "/" in spec or spec.endswith(JSONL_SUFFIXES)
            or pathlib.Path(spec).expanduser().exists())


def matched_files(spec: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """(root the document names are relative to, the files `spec` names, sorted)."""
    path = pathlib.Path(spec).expanduser()
    if any(c in spec for c in _GLOB_CHARS):
        files = sorted(pathlib.Path(p) for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f"data.corpus={spec}: no files match this pattern")
        return pathlib.Path(), files
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise FileNotFoundError(f"data.corpus={spec}: the folder {path} has no files")
        return path, files
    if path.is_file():
        return path.parent, [path]
    raise FileNotFoundError(f"data.corpus={spec}: no such file or folder (nor a registered corpus)")


def read_text_file(path: pathlib.Path) -> str:
    """A whole UTF-8 file; a binary file (a NUL byte, or bytes that are not UTF-8) is an error."""
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(f"{path}: not a text file (a NUL byte at offset {nul}); point data.corpus at text "
                         "files only, e.g. with a glob such as DIR/**/*.txt")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); convert it "
                         "to UTF-8 or leave it out with a glob such as DIR/**/*.txt") from None


def read_jsonl_texts(path: pathlib.Path, name: str) -> list[Document]:
    docs = []
    for line_no, record in read_objects(path):
        text = record.get("text")
        if not isinstance(text, str):
            what = "no \"text\" key" if "text" not in record else f"\"text\" is a {type(text).__name__}, not a string"
            raise ValueError(f"{path}:{line_no}: {what} (each line must be a {{\"text\": \"...\"}} object)")
        docs.append(Document(f"{name}:{line_no}", text, text))
    return docs


def read_documents(spec: str) -> list[Document]:
    """The non-empty documents `spec` names, in file order (and line order within a JSONL file)."""
    root, files = matched_files(spec)
    docs = []
    for path in files:
        name = path.relative_to(root).as_posix() if root != pathlib.Path() else path.as_posix()
        if path.name.endswith(JSONL_SUFFIXES):
            docs += read_jsonl_texts(path, name)
        else:
            docs.append(Document(name, read_text_file(path), name))
    docs = [doc for doc in docs if doc.text.strip()]
    if not docs:
        raise ValueError(f"data.corpus={spec}: every document is empty ({len(files)} file(s))")
    return docs
