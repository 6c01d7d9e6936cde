"""lmlab's own byte-level BPE (`tokenizer.kind = "bytebpe"`), trained by `bpe_trainer`.

Id layout (deterministic for a given text, size and special-token list):

    0, 1, 2                 pad, bos, eos (decode to nothing)
    3 ...                   user special tokens, in the order given (matched verbatim in text)
    next 256                one token per byte value: every string is encodable, nothing is lost
    the rest                one token per merge, in the order learned

Encoding cuts out the special tokens, pre-tokenizes the rest with the same regexes as training
(`bytelevel.split_pieces`: digits one by one, then GPT-2's pattern) and merges each piece's bytes
by rank (`bytelevel.merge_by_rank`). The model file lists the merges as pairs of symbols (0-255
bytes, 256 + k the k-th merge) with each merged token's text beside it for reading.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

import lmlab.tokenizers.bpe_trainer as bpe_trainer
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
from lmlab.tokenizers.bytelevel import PRETOKENIZERS, bytes_to_unicode, merge_by_rank, split_pieces

MODEL_FILE = "bytebpe.json"
NUM_RESERVED = 3  # pad, bos, eos
DEFAULT_PRETOKENIZER = PRETOKENIZERS["smollm"]  # each digit alone, then GPT-2's pattern

# Pieces longer than this are merged but not cached (a pathological input should not fill memory).
_CACHE_MAX_PIECE_CHARS = 256
_CACHE_MAX_ENTRIES = 200_000


class ByteBpeTokenizer(Tokenizer):
    """Byte-level BPE trained by lmlab on the user's corpus; lossless on any string."""

    kind = "bytebpe"

    def __init__(self, merges: Sequence[tuple[int, int]], special_tokens: Sequence[str] = (),
                 pretokenizer: Sequence[str] = DEFAULT_PRETOKENIZER) -> None:
        """`merges[k]` is the pair of symbols that becomes symbol 256 + k (see the module docstring)."""
        special_tokens = validate_special_tokens(special_tokens)
        self.merges = [tuple(pair) for pair in merges]
        self.pretokenizer = tuple(pretokenizer)
        try:
            self._splitters = [regex.compile(p) for p in self.pretokenizer]
        except (regex.error, TypeError) as error:
            raise ValueError(f"bad pre-tokenizer regex: {error}") from None
        symbol_bytes = [bytes([b]) for b in range(bpe_trainer.NUM_BYTES)]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, pair in enumerate(self.merges):
            if not (len(pair) == 2 and all(type(s) is int and 0 <= s < len(symbol_bytes) for s in pair)):
                raise ValueError(f"merge {rank} ({list(pair)}) should be two symbols made before it")
            if pair in self._ranks:
                raise ValueError(f"merge {rank} ({list(pair)}) repeats merge {self._ranks[pair][0]}")
            self._ranks[pair] = (rank, len(symbol_bytes))
            symbol_bytes.append(symbol_bytes[pair[0]] + symbol_bytes[pair[1]])
        self.symbol_bytes = symbol_bytes
        self.first_symbol_id = NUM_RESERVED + len(special_tokens)  # id of byte 0
        self._cache: dict[str, list[int]] = {}
        super().__init__(
            [b""] * NUM_RESERVED + [t.encode("utf-8") for t in special_tokens] + symbol_bytes,
            pad_id=0, bos_id=1, eos_id=2,
            special_ids={t: NUM_RESERVED + i for i, t in enumerate(special_tokens)})

    @classmethod
    def train(cls, text: str, *, vocab_size: int | None, special_tokens: Sequence[str] = ()) -> ByteBpeTokenizer:
        return cls.train_explained([text], vocab_size=vocab_size, special_tokens=special_tokens)[0]

    @classmethod
    def train_explained(cls, texts: Sequence[str], *, vocab_size: int | None, special_tokens: Sequence[str] = (),
                        ) -> tuple[ByteBpeTokenizer, list[bpe_trainer.Merge]]:
        """Train on `texts` (pieces never span two texts) to exactly `vocab_size` ids; also return
        the merges with their counts and the words they touched (`lmlab bpe train --explain`)."""
        special_tokens = validate_special_tokens(special_tokens)
        smallest = NUM_RESERVED + len(special_tokens) + bpe_trainer.NUM_BYTES
        if not isinstance(vocab_size, int) or vocab_size < smallest:
            raise ValueError(f"bytebpe vocab_size must be at least {smallest} (pad/bos/eos, "
                             f"{len(special_tokens)} special tokens, 256 bytes), got {vocab_size}")
        empty = cls((), special_tokens)
        pieces = (piece for text in texts for piece in empty._ordinary_texts(require_text(text)))
        word_counts = bpe_trainer.count_pieces(pieces, empty.pretokenize)
        merges = bpe_trainer.learn_merges(word_counts, vocab_size - smallest)
        if len(merges) < vocab_size - smallest:
            raise ValueError(f"the training text allows only {len(merges)} merges (every word is then one token): "
                             f"bytebpe vocab_size at most {smallest + len(merges)}, got {vocab_size}")
        return cls([m.pair for m in merges], special_tokens), merges

    # -- encoding -----------------------------------------------------------------------------------

    @functools.cached_property
    def _special_pattern(self) -> regex.Pattern[str] | None:
        ordered = sorted(self.special_ids, key=len, reverse=True)  # a token that prefixes another never wins
        return regex.compile("|".join(regex.escape(t) for t in ordered)) if ordered else None

    def _ordinary_texts(self, text: str) -> list[str]:
        """`text` cut at its special tokens (which are dropped)."""
        return self._special_pattern.split(text) if self._special_pattern is not None else [text]

    def pretokenize(self, text: str) -> list[str]:
        """The pieces BPE runs on, in order; they concatenate back to `text` (no special tokens in it)."""
        return split_pieces(self._splitters, text)

    def encode(self, text: str) -> list[int]:
        require_text(text)
        ids: list[int] = []
        if self._special_pattern is None:
            self._encode_ordinary(text, ids)
            return ids
        start = 0
        for match in self._special_pattern.finditer(text):
            self._encode_ordinary(text[start:match.start()], ids)
            ids.append(self.special_ids[match.group()])
            start = match.end()
        self._encode_ordinary(text[start:], ids)
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache, offset = self._cache, self.first_symbol_id
        for piece in self.pretokenize(text):
            ids = cache.get(piece)
            if ids is None:
                ids = [offset + s for s in merge_by_rank(list(piece.encode("utf-8")), self._ranks)]
                if len(piece) <= _CACHE_MAX_PIECE_CHARS:
                    if len(cache) >= _CACHE_MAX_ENTRIES:
                        cache.clear()
                    cache[piece] = ids
            out.extend(ids)

    def merged_texts(self) -> list[str]:
        """Each merge's token in GPT-2's printable byte characters (a space reads "Ġ")."""
        byte_map = bytes_to_unicode()
        merged = self.symbol_bytes[bpe_trainer.NUM_BYTES:]
        return ["".join(byte_map[b] for b in data) for data in merged]

    # -- files --------------------------------------------------------------------------------------

    def save(self, directory: PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lines = ",\n".join(json.dumps([left, right, text], ensure_ascii=False)
                           for (left, right), text in zip(self.merges, self.merged_texts()))
        # One merge per line: [left symbol, right symbol, merged text in GPT-2's byte characters].
        (directory / MODEL_FILE).write_text('{"merges": [\n' + lines + "\n]}\n", encoding="utf-8")
        self._write_metadata(directory, {"model": MODEL_FILE}, extra={"pretokenizer": list(self.pretokenizer)})

    @classmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> ByteBpeTokenizer:
        special_tokens = metadata_special_tokens(metadata, directory)
        expected_size = metadata_field(metadata, "vocab_size", int, directory)
        pretokenizer = metadata_field(metadata, "pretokenizer", list, directory)
        model_path = metadata_file_path(metadata, "model", directory)
        model = read_json_file(model_path)
        merges = model.get("merges") if isinstance(model, dict) else None
        if not isinstance(merges, list) or not all(isinstance(m, list) and len(m) == 3 for m in merges):
            raise ValueError(f"corrupt tokenizer file {model_path}: expected 'merges', a list of "
                             "[left, right, text] entries")
        try:
            tokenizer = cls([m[:2] for m in merges], special_tokens, pretokenizer)
        except (ValueError, TypeError) as error:
            raise ValueError(f"corrupt tokenizer file {model_path}: {error}") from None
        for rank, (entry, text) in enumerate(zip(merges, tokenizer.merged_texts())):
            if entry[2] != text:  # the pairs rule; a text that disagrees means the file was damaged
                raise ValueError(f"corrupt tokenizer file {model_path}: merge {rank} gives {text!r}, "
                                 f"but the file says {entry[2]!r}")
        if tokenizer.vocab_size != expected_size:
            raise ValueError(f"corrupt tokenizer file {model_path}: gives vocab_size {tokenizer.vocab_size}, "
                             f"but tokenizer.json says {expected_size}")
        return tokenizer


def read_texts(paths: Sequence[PathLike]) -> list[str]:
    """The UTF-8 text of each training file; an unreadable or non-UTF-8 file is an error naming it."""
    texts = []
    for path in paths:
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    return texts
