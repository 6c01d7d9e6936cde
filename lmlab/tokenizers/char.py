"""Character-level tokenizer with UTF-8 byte fallback.

Id layout (deterministic for a given text and special-token list):

    0, 1, 2                 pad, bos, eos
    3 ...                   user special tokens, in the order given
    next ...                distinct characters of the training text, sorted by code point
    last 256                one token per byte value, for characters unseen in training

The vocabulary size follows from the training text; it is not chosen by the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.tokenizers.base import (
    PathLike,
    Tokenizer,
    metadata_field,
    metadata_file_path,
    metadata_special_tokens,
    read_json_file,
    require_text,
    validate_special_tokens,
)

CHAR_VOCAB_FILE = "char_vocab.json"
NUM_RESERVED = 3  # pad, bos, eos
NUM_BYTE_TOKENS = 256


class CharTokenizer(Tokenizer):
    """One token per character seen in training; other characters become their UTF-8 bytes."""

    kind = "char"

    def __init__(self, characters: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        special_tokens = validate_special_tokens(special_tokens)
        characters = tuple(characters)
        _check_characters(characters)

        self.characters: tuple[str, ...] = characters
        self._first_char_id = NUM_RESERVED + len(special_tokens)
        self._first_byte_id = self._first_char_id + len(characters)
        # Sorted code points let encode map a whole string with one searchsorted.
        self._char_codepoints = np.array([ord(c) for c in characters], dtype=np.uint32)
        # Longest token first, so that a token that prefixes another never wins a tie.
        self._special_pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True)))
            if special_tokens
            else None
        )

        piece_bytes = (
            [b""] * NUM_RESERVED
            + [token.encode("utf-8") for token in special_tokens]
            + [c.encode("utf-8") for c in characters]
            + [bytes([value]) for value in range(NUM_BYTE_TOKENS)]
        )
        super().__init__(
            piece_bytes,
            pad_id=0,
            bos_id=1,
            eos_id=2,
            special_ids={t: NUM_RESERVED + i for i, t in enumerate(special_tokens)},
        )

    @classmethod
    def train(
        cls, text: str, *, vocab_size: int | None = None, special_tokens: Sequence[str] = ()
    ) -> CharTokenizer:
        """Build the vocabulary from the distinct characters of `text`.

        `vocab_size` is ignored: the size is fixed by the text (see the module docstring).
        """
        require_text(text)
        return cls(sorted(set(text)), special_tokens)

    def encode(self, text: str) -> list[int]:
        require_text(text)
        if self._special_pattern is None:
            return self._encode_characters(text)
        ids: list[int] = []
        position = 0
        for match in self._special_pattern.finditer(text):
            ids.extend(self._encode_characters(text[position : match.start()]))
            ids.append(self.special_ids[match.group()])
            position = match.end()
        ids.extend(self._encode_characters(text[position:]))
        return ids

    def _encode_characters(self, text: str) -> list[int]:
        """Ids for text that holds no special tokens."""
        if not text:
            return []
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        known = self._char_codepoints
        if known.size:
            index = np.searchsorted(known, codepoints)
            is_known = known[np.minimum(index, known.size - 1)] == codepoints
        else:
            index = np.zeros(codepoints.shape, dtype=np.intp)
            is_known = np.zeros(codepoints.shape, dtype=bool)
        ids = index + self._first_char_id
        if is_known.all():
            return ids.tolist()

        # Unseen characters are rare in practice, so a Python loop over them is fine.
        result: list[int] = []
        start = 0
        for position in np.flatnonzero(~is_known).tolist():
            result.extend(ids[start:position].tolist())
            result.extend(self._first_byte_id + b for b in text[position].encode("utf-8"))
            start = position + 1
        result.extend(ids[start:].tolist())
        return result

    def save(self, directory: PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path = directory / CHAR_VOCAB_FILE
        vocab_path.write_text(
            # One character per line; ensure_ascii escapes control and invisible characters.
            json.dumps({"characters": list(self.characters)}, ensure_ascii=True, indent=0) + "\n",
            encoding="utf-8",
        )
        self._write_metadata(directory, {"vocab": CHAR_VOCAB_FILE})

    @classmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> CharTokenizer:
        special_tokens = metadata_special_tokens(metadata, directory)
        expected_size = metadata_field(metadata, "vocab_size", int, directory)
        vocab_path = metadata_file_path(metadata, "vocab", directory)
        content = read_json_file(vocab_path)
        characters = content.get("characters") if isinstance(content, dict) else None
        if not isinstance(characters, list):
            raise ValueError(f"corrupt tokenizer file {vocab_path}: missing list 'characters'")
        try:
            tokenizer = cls(characters, special_tokens)
        except ValueError as error:
            raise ValueError(f"corrupt tokenizer file {vocab_path}: {error}") from None
        if tokenizer.vocab_size != expected_size:
            raise ValueError(
                f"corrupt tokenizer file {vocab_path}: gives vocab_size {tokenizer.vocab_size}, "
                f"but tokenizer.json says {expected_size}"
            )
        return tokenizer


def _check_characters(characters: Sequence[str]) -> None:
    """The character list must be single characters, strictly sorted, UTF-8 encodable."""
    previous = None
    for c in characters:
        if not isinstance(c, str) or len(c) != 1:
            raise ValueError(f"character vocabulary entries must be single characters, got {c!r}")
        require_text(c, what=f"character {c!r}")
        if previous is not None and c <= previous:
            raise ValueError("character vocabulary must be sorted and free of duplicates")
        previous = c

