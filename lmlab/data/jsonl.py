"""JSON lines: one object per line, every problem a one-line ValueError naming the file and line."""

from __future__ import annotations

import gzip
import json
import pathlib


def _lines(path: pathlib.Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: not UTF-8 JSON lines ({e})") from None


def read_objects(path: str | pathlib.Path):
    """(line number, object) of every non-blank line; a line that is not a JSON object is an error."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        yield line_no, record
