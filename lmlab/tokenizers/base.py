"""The `Tokenizer` interface and the helpers every tokenizer kind shares.

Both kinds describe their vocabulary the same way: each id maps to the exact
UTF-8 bytes it contributes to decoded text. Decoding is then a byte
concatenation, and `token_byte_lengths` (used for bits-per-byte) falls out of
the same table, so the two can never disagree.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import regex

# The small JSON file that names a saved tokenizer's kind and model files.
METADATA_FILE = "tokenizer.json"
FORMAT_VERSION = 1

# Text names of the reserved tokens. They never match input text (encode
# treats "<s>" in a string as ordinary characters), so users cannot pick them
# as special tokens.
PAD_PIECE = "<pad>"
BOS_PIECE = "<s>"
EOS_PIECE = "</s>"
UNK_PIECE = "<unk>"
RESERVED_PIECES = (PAD_PIECE, BOS_PIECE, EOS_PIECE, UNK_PIECE)

# sentencepiece writes spaces as this symbol inside its pieces.
SPM_META_SYMBOL = "\u2581"

# sentencepiece names its byte-fallback pieces like this; a user token with
# such a name would collide with one of them.
_BYTE_PIECE_NAME = re.compile(r"<0x[0-9A-Fa-f]{2}>")

PathLike = str | os.PathLike


class Tokenizer(abc.ABC):
    """A trained tokenizer: text <-> token ids in [0, vocab_size).

    Subclasses supply `encode` and `save`; they hand the base class a table of
    the bytes each id decodes to, from which `decode` and
    `token_byte_lengths` are derived.
    """

    kind: ClassVar[str]  # "bpe" or "char"; also the name recorded in tokenizer.json
    vocab_size: int  # ids are in [0, vocab_size)
    pad_id: int
    bos_id: int
    eos_id: int
    special_ids: dict[str, int]  # user special token -> id, in the order given at training

    def __init__(
        self,
        piece_bytes: Sequence[bytes],
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        special_ids: Mapping[str, int],
    ) -> None:
        self._piece_bytes: list[bytes] = list(piece_bytes)
        self.vocab_size = len(self._piece_bytes)
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.special_ids = dict(special_ids)
        self._byte_lengths = np.fromiter(
            (len(b) for b in self._piece_bytes), dtype=np.int32, count=self.vocab_size
        )

    @classmethod
    @abc.abstractmethod
    def train(
        cls, text: str, *, vocab_size: int | None, special_tokens: Sequence[str] = ()
    ) -> Tokenizer:
        """Train on `text`. Kinds whose size follows from the text may ignore `vocab_size`."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> Tokenizer:
        """Rebuild from a directory written by `save`; `metadata` is its parsed tokenizer.json."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids for `text`; `decode` inverts this exactly."""

    @abc.abstractmethod
    def save(self, directory: PathLike) -> None:
        """Write the tokenizer into `directory` (created if missing) for `load_tokenizer`."""

    def _write_metadata(self, directory: PathLike, files: Mapping[str, str],
                        extra: Mapping[str, Any] | None = None) -> None:
        """The tokenizer.json every kind writes: its kind, size, special tokens and model files.

        `extra` holds a kind's own fields (e.g. the ids of a pretrained vocabulary's bos/eos).
        """
        write_metadata(directory, {"kind": self.kind, "vocab_size": self.vocab_size,
                                   "special_tokens": list(self.special_ids), "files": dict(files),
                                   **(extra or {})})

    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids`. pad/bos/eos decode to nothing, special tokens to their text.

        Byte-fallback ids that do not form valid UTF-8 (possible in model
        samples, never in `encode` output) become U+FFFD.
        """
        id_list = _checked_id_list(ids, self.vocab_size)
        table = self._piece_bytes
        return b"".join([table[i] for i in id_list]).decode("utf-8", errors="replace")

    def piece_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` adds to decoded text (b"" for pad/bos/eos)."""
        return self._piece_bytes[_checked_id_list([token_id], self.vocab_size)[0]]

    def token_byte_lengths(self) -> np.ndarray:
        """int32 [vocab_size]: UTF-8 bytes each id adds to decoded text (0 for pad/bos/eos)."""
        return self._byte_lengths.copy()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, "
            f"special_tokens={list(self.special_ids)})"
        )


class PretrainedTokenizer(Tokenizer):
    """A kind built only by `lmlab import` from a model's own vocabulary (bytelevel_bpe, wordpiece).

    `train` refuses; `encode` cuts the special tokens out of the text verbatim, one id each
    (longest first, so a token that prefixes another never wins), and hands every piece in
    between to the kind's `_encode_ordinary`.
    """

    # Shown in the error `train` raises, to say where such a tokenizer comes from.
    import_command: ClassVar[str] = "lmlab import"

    @functools.cached_property
    def _special_pattern(self) -> regex.Pattern[str] | None:
        ordered = sorted(self.special_ids, key=len, reverse=True)
        return regex.compile("|".join(regex.escape(t) for t in ordered)) if ordered else None

    @classmethod
    def train(
        cls, text: str, *, vocab_size: int | None, special_tokens: Sequence[str] = ()
    ) -> Tokenizer:
        raise ValueError(
            f"{cls.kind} tokenizers are pretrained only (import one with `{cls.import_command}`); "
            "train a 'bpe' tokenizer instead"
        )

    def encode(self, text: str) -> list[int]:
        require_text(text)
        ids: list[int] = []
        start = 0
        if self._special_pattern is not None:
            for match in self._special_pattern.finditer(text):
                self._encode_ordinary(text[start : match.start()], ids)
                ids.append(self.special_ids[match.group()])
                start = match.end()
        self._encode_ordinary(text[start:], ids)
        return ids

    @abc.abstractmethod
    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append to `out` the ids of `text`, which holds no special token."""


def _checked_id_list(ids: Sequence[int], vocab_size: int) -> list[int]:
    """`ids` as a list of Python ints, rejecting anything outside the vocabulary.

    The explicit range check matters: a negative id would otherwise index the
    table from the end and decode to a wrong token silently.
    """
    array = np.asarray(ids)
    if array.size == 0:
        return []
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"decode expects a 1-D sequence of integer ids, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is out of range [0, {vocab_size})")
    return array.tolist()


def require_text(text: object, what: str = "text") -> str:
    """Check that `text` is a str that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} contains a surrogate code point at position {error.start}; "
            "it cannot be encoded as UTF-8"
        ) from None
    return text


def validate_special_tokens(special_tokens: Sequence[str]) -> tuple[str, ...]:
    """Check user special tokens; the same rules apply to every kind.

    Whitespace is refused because sentencepiece rewrites spaces inside pieces
    and because BPE encoding splits long text at newlines, which is only exact
    if no token spans one.
    """
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a sequence of strings, not a single str")
    tokens = tuple(special_tokens)
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        require_text(token, what=f"special token {token!r}")
        if any(ch.isspace() for ch in token):
            raise ValueError(f"special token {token!r} contains whitespace")
        if SPM_META_SYMBOL in token:
            raise ValueError(f"special token {token!r} contains the reserved symbol U+2581")
        if token in RESERVED_PIECES:
            raise ValueError(
                f"special token {token!r} is reserved; pad/bos/eos/unk ids always exist"
            )
        if _BYTE_PIECE_NAME.fullmatch(token):
            raise ValueError(f"special token {token!r} collides with a byte-fallback token name")
    duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
    if duplicates:
        raise ValueError(f"duplicate special tokens: {duplicates}")
    return tokens


def one_line(message: object) -> str:
    """Collapse an error message (often a multi-line library message) onto one line."""
    return " ".join(str(message).split())


def write_metadata(directory: PathLike, metadata: Mapping[str, Any]) -> None:
    """Write the tokenizer's JSON metadata (kind, files, ...) into `directory`."""
    content = {"format_version": FORMAT_VERSION, **metadata}
    path = Path(directory) / METADATA_FILE
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def read_text_file(path: PathLike) -> str:
    """A tokenizer file's UTF-8 text; a missing or unreadable file is a one-line ValueError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"tokenizer file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read tokenizer file {path}: {one_line(error)}") from None


def read_json_file(path: Path) -> Any:
    """Parse a JSON file, turning every failure into a one-line ValueError naming it."""
    raw = read_text_file(path)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt tokenizer file {path}: {one_line(error)}") from None


def read_metadata(directory: PathLike) -> dict[str, Any]:
    """Read and sanity-check `tokenizer.json` from `directory`."""
    path = Path(directory) / METADATA_FILE
    metadata = read_json_file(path)
    if not isinstance(metadata, dict):
        raise ValueError(f"corrupt tokenizer file {path}: expected a JSON object")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported tokenizer format_version {version!r} in {path}; "
            f"expected {FORMAT_VERSION}"
        )
    if not isinstance(metadata.get("kind"), str):
        raise ValueError(f"corrupt tokenizer file {path}: missing string field 'kind'")
    return metadata


def metadata_field(metadata: Mapping[str, Any], key: str, kind: type, directory: PathLike) -> Any:
    """Fetch a required metadata field of a given type, or fail naming the file."""
    value = metadata.get(key)
    # bool is an int subclass; a `true` where a count belongs is still corrupt.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        path = Path(directory) / METADATA_FILE
        raise ValueError(
            f"corrupt tokenizer file {path}: field {key!r} should be {kind.__name__}, "
            f"got {value!r}"
        )
    return value


def metadata_file_path(metadata: Mapping[str, Any], key: str, directory: PathLike) -> Path:
    """Resolve a model file named in the metadata, refusing paths that leave `directory`."""
    files = metadata_field(metadata, "files", dict, directory)
    name = files.get(key)
    if not isinstance(name, str) or not name or Path(name).name != name:
        path = Path(directory) / METADATA_FILE
        raise ValueError(f"corrupt tokenizer file {path}: files.{key} should be a file name")
    return Path(directory) / name


def metadata_special_tokens(metadata: Mapping[str, Any], directory: PathLike) -> tuple[str, ...]:
    """The special tokens recorded in the metadata, validated like at training time."""
    tokens = metadata_field(metadata, "special_tokens", list, directory)
    try:
        return validate_special_tokens(tokens)
    except (TypeError, ValueError) as error:
        path = Path(directory) / METADATA_FILE
        raise ValueError(f"corrupt tokenizer file {path}: {one_line(error)}") from None
