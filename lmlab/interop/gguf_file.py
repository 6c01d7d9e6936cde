"""A small reader for GGUF files (llama.cpp's format, versions 2 and 3): metadata and raw tensors.

Layout: b"GGUF", version u32, tensor count u64, metadata count u64; the metadata as (key string,
type u32, value); per tensor (name, n_dims u32, dims u64 innermost first, ggml type u32, offset
u64); then, aligned to `general.alignment` (32), the tensor data. All little-endian.

`gguf.GGUFReader` reads the same, but builds a numpy memmap view per string: ~8 s for a 49k-token
vocabulary and its 49k merges, against ~0.1 s here. Dequantization is left to `gguf.quants`.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import pathlib
import struct

import numpy as np

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Metadata value types: (struct format, numpy dtype) for the fixed-size ones.
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # numpy order (outermost first): W[out, in] for a linear layer
    ggml_type: int           # gguf.GGMLQuantizationType value: 0 F32, 1 F16, 3 Q4_1, 8 Q8_0, ...
    offset: int              # from the start of the data section


class _Cursor:
    def __init__(self, buffer, path):
        self.buffer, self.pos, self.path = buffer, 0, path

    def unpack(self, fmt: str):
        try:
            values = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise ValueError(f"{self.path}: truncated GGUF file (at byte {self.pos})") from None
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.pos + length
        if end > len(self.buffer):
            raise ValueError(f"{self.path}: truncated GGUF file (string at byte {self.pos})")
        text = bytes(self.buffer[self.pos:end]).decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind][0])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if item_kind in _SCALARS:
                dtype = np.dtype(_SCALARS[item_kind][1]).newbyteorder("<")
                end = self.pos + count * dtype.itemsize
                if end > len(self.buffer):
                    raise ValueError(f"{self.path}: truncated GGUF file (array at byte {self.pos})")
                array = np.frombuffer(self.buffer, dtype, count, self.pos).tolist()
                self.pos = end
                return array
            return [self.value(item_kind) for _ in range(count)]
        raise ValueError(f"{self.path}: unknown GGUF metadata type {kind} at byte {self.pos}")


class GGUFFile:
    """`metadata` (key -> Python value) and `tensors` (name -> TensorInfo) of a GGUF file."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such file: {self.path}")
        with open(self.path, "rb") as f:
            if f.read(4) != MAGIC:
                f.seek(0)
                raise ValueError(f"{self.path} is not a GGUF file (it starts with {f.read(4)!r}, not {MAGIC!r})")
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:
                raise ValueError(f"{self.path}: truncated GGUF file") from None
        cursor = _Cursor(memoryview(self._map), self.path)
        cursor.pos = 4
        version = cursor.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"{self.path}: GGUF version {version} is not supported "
                             f"(expected {' or '.join(map(str, SUPPORTED_VERSIONS))})")
        n_tensors, n_metadata = cursor.unpack("<Q"), cursor.unpack("<Q")
        self.metadata: dict[str, object] = {}
        for _ in range(n_metadata):
            key = cursor.string()
            self.metadata[key] = cursor.value(cursor.unpack("<I"))
        self.tensors: dict[str, TensorInfo] = {}
        for _ in range(n_tensors):
            name = cursor.string()
            dims = [cursor.unpack("<Q") for _ in range(cursor.unpack("<I"))]
            ggml_type, offset = cursor.unpack("<I"), cursor.unpack("<Q")
            self.tensors[name] = TensorInfo(name, tuple(reversed(dims)), ggml_type, offset)
        alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        self.data_start = -(-cursor.pos // alignment) * alignment

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes (quantized blocks or plain floats) as a read-only uint8 array."""
        import gguf

        info = self.tensors[name]
        block_size, block_bytes = gguf.GGML_QUANT_SIZES[self._qtype(info)]
        n_bytes = int(np.prod(info.shape)) // block_size * block_bytes
        start = self.data_start + info.offset
        if start + n_bytes > len(self._map):
            raise ValueError(f"{self.path}: truncated GGUF file (tensor {name})")
        return np.frombuffer(self._map, np.uint8, n_bytes, start)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 in numpy order, whatever its storage type."""
        import gguf
        from gguf import quants

        info = self.tensors[name]
        qtype = self._qtype(info)
        raw = self.raw(name)
        if qtype == gguf.GGMLQuantizationType.F32:
            values = raw.view(np.float32)
        elif qtype == gguf.GGMLQuantizationType.F16:
            values = raw.view(np.float16)
        else:
            try:  # dequantize wants rows of whole blocks: [rows, bytes per row]
                values = quants.dequantize(raw.reshape(int(np.prod(info.shape[:-1])), -1), qtype)
            except NotImplementedError:
                raise ValueError(f"{self.path}: tensor {name} is stored as {qtype.name}, "
                                 "which the gguf package cannot dequantize") from None
        return np.asarray(values, np.float32).reshape(info.shape)

    def _qtype(self, info: TensorInfo):
        import gguf

        try:
            return gguf.GGMLQuantizationType(info.ggml_type)
        except ValueError:
            raise ValueError(f"{self.path}: tensor {info.name} has unknown ggml type {info.ggml_type}") from None
