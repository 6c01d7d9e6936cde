"""Reading .safetensors files with numpy alone.

Format: an unsigned 64-bit little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw
little-endian tensor bytes; offsets count from the end of the header.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct

import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_MAX_HEADER = 100 << 20


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> array (bfloat16 widened to float32); one clear ValueError for a file of another format."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path} is not a safetensors file (header length {header_len} does not fit)")
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a safetensors file (no JSON header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            kind, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path}: malformed safetensors entry for {name!r}") from None
        if end > len(body) or begin > end:
            raise ValueError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        raw = body[begin:end]
        if kind == "BF16":  # bfloat16 is the top half of a float32
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif kind in _DTYPES:
            array = np.frombuffer(raw, np.dtype(_DTYPES[kind]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {kind}")
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name!r} has {array.size} values for shape {shape}")
        tensors[name] = array.reshape(shape)
    return tensors
