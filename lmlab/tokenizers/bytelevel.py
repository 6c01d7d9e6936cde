"""Byte-level BPE (GPT-2, Llama-3, SmolLM2 style) from a pretrained vocabulary and merge list.

Encoding, in order:
  1. special tokens (e.g. <|im_start|>) are cut out of the text verbatim, one id each;
  2. the rest is pre-tokenized by a sequence of split regexes: each regex cuts every piece left by
     the previous one into its matches and the gaps between them (so a lookahead never sees past
     a piece boundary, as in HF `tokenizers` and llama.cpp);
  3. each piece's UTF-8 bytes are written as printable characters (GPT-2's byte <-> unicode map,
     so a space is "Ġ") and merged by BPE: repeatedly join the adjacent pair with the lowest merge
     rank. Results are cached per piece: natural text repeats its words.

Pretrained only: `train` raises. Decoding maps each id back to its bytes (`base.Tokenizer`).
Every id decodes to something: the special tokens, pad/bos/eos included, to their own text,
because chat formats (ChatML) use them as visible markup.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

from lmlab.tokenizers.base import (
    PathLike,
    PretrainedTokenizer,
    metadata_field,
    metadata_file_path,
    read_json_file,
)

MODEL_FILE = "bytelevel_bpe.json"

# GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols (each with an optional
# leading space), then runs of whitespace that leave the last space to the next word.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama-3's: case-insensitive contractions, numbers in groups of at most three digits, newlines apart.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                  r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# Pre-tokenizers by the name GGUF files give them (`tokenizer.ggml.pre`), as split-regex sequences.
PRETOKENIZERS: dict[str, tuple[str, ...]] = {
    "gpt-2": (GPT2_PATTERN,),
    "default": (GPT2_PATTERN,),
    # StarCoder-family vocabularies (SmolLM, SmolLM2): every digit on its own, then GPT-2.
    "smollm": (r"\p{N}", GPT2_PATTERN),
    "starcoder": (r"\p{N}", GPT2_PATTERN),
    "llama-bpe": (LLAMA3_PATTERN,),
}

# Words longer than this are merged but not cached (a pathological input should not fill memory).
_CACHE_MAX_WORD_CHARS = 256
_CACHE_MAX_ENTRIES = 200_000


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map.

    Printable Latin-1 bytes map to themselves; the other 68 (control characters, space, ...) to
    U+0100 onwards in byte order. BPE vocabularies are written in these characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.cache
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_text_to_bytes(token: str) -> bytes:
    """The bytes a vocabulary entry (in byte-map characters) stands for."""
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in token)
    except KeyError as error:
        raise ValueError(f"vocabulary entry {token!r} has a character outside the byte map: {error}") from None


def split_pieces(splitters: Sequence[regex.Pattern[str]], text: str) -> list[str]:
    """Pre-tokenize: each regex cuts every piece left by the previous one into its matches and the
    gaps between them. The pieces concatenate back to `text`."""
    pieces = [text] if text else []
    for splitter in splitters:
        split = []
        for piece in pieces:
            position = 0
            for match in splitter.finditer(piece):
                if match.start() > position:
                    split.append(piece[position:match.start()])
                if match.end() > match.start():
                    split.append(match.group())
                position = match.end()
            if position < len(piece):
                split.append(piece[position:])
        pieces = split
    return pieces


def merge_by_rank(ids: list[int], ranks: Mapping[tuple[int, int], tuple[int, int]]) -> list[int]:
    """BPE-encode one piece: merge the lowest-ranked adjacent pair (`ranks[pair]` is its
    (rank, merged id)), every occurrence left to right, until no pair has a rank."""
    while len(ids) > 1:
        best = None
        for pair in zip(ids, ids[1:]):
            entry = ranks.get(pair)
            if entry is not None and (best is None or entry[0] < best[0]):
                best, best_pair = entry, pair
        if best is None:
            break
        merged, i, out = best[1], 0, []
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == best_pair[0] and ids[i + 1] == best_pair[1]:
                out.append(merged)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


class ByteLevelBpeTokenizer(PretrainedTokenizer):
    """Pretrained byte-level BPE; ids are the vocabulary's, special tokens match text verbatim."""

    kind = "bytelevel_bpe"

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        *,
        pretokenizer: Sequence[str],
        special_tokens: Sequence[str] = (),
        bos_id: int,
        eos_id: int,
        pad_id: int,
        chat_template: str | None = None,
    ) -> None:
        """`tokens[i]` is id i in byte-map characters; `merges` are "left right" in rank order."""
        tokens = list(tokens)
        self.tokens = tokens
        self.merges = list(merges)
        self.pretokenizer = tuple(pretokenizer)
        self.chat_template = chat_template
        self._ids = {t: i for i, t in enumerate(tokens)}
        if len(self._ids) != len(tokens):
            raise ValueError("vocabulary has duplicate entries")
        special_ids = {}
        for token in special_tokens:
            if token not in self._ids:
                raise ValueError(f"special token {token!r} is not in the vocabulary")
            special_ids[token] = self._ids[token]
        for name, value in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id)):
            if not 0 <= value < len(tokens):
                raise ValueError(f"{name} id {value} is outside the vocabulary of {len(tokens)}")

        # Merge rank by pair of the *ids* of its halves: the BPE loop then works on ints.
        self._merge_ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, merge in enumerate(self.merges):
            left, sep, right = merge.partition(" ") if isinstance(merge, str) else ("", "", "")
            if not sep or not left or not right:
                raise ValueError(f"merge {rank} ({merge!r}) is not 'left right'")
            try:
                pair = (self._ids[left], self._ids[right])
                merged = self._ids[left + right]
            except KeyError:
                raise ValueError(f"merge {rank} ({merge!r}) names a token missing from the vocabulary") from None
            self._merge_ranks.setdefault(pair, (rank, merged))
        # A vocabulary may lack a few single-byte tokens (SmolLM2 has no control bytes 0x00-0x08):
        # such bytes are dropped from the input, as HF tokenizers and llama.cpp do.
        byte_map = bytes_to_unicode()
        self._byte_ids = [self._ids.get(byte_map[b]) for b in range(256)]

        try:
            self._splitters = [regex.compile(p) for p in self.pretokenizer]
        except regex.error as error:
            raise ValueError(f"bad pre-tokenizer regex: {error}") from None
        self._word_cache: dict[str, list[int]] = {}

        special_set = set(special_ids.values())
        piece_bytes = [t.encode("utf-8") if i in special_set else token_text_to_bytes(t)
                       for i, t in enumerate(tokens)]
        super().__init__(piece_bytes, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, special_ids=special_ids)

    # -- encoding (`PretrainedTokenizer.encode` cuts out special tokens, then calls `_encode_ordinary`) --

    def pretokenize(self, text: str) -> list[str]:
        """The pieces BPE runs on, in order; they concatenate back to `text`."""
        return split_pieces(self._splitters, text)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._word_cache
        for piece in self.pretokenize(text):
            ids = cache.get(piece)
            if ids is None:
                byte_ids = self._byte_ids
                piece_ids = [byte_ids[b] for b in piece.encode("utf-8") if byte_ids[b] is not None]
                ids = merge_by_rank(piece_ids, self._merge_ranks)
                if len(piece) <= _CACHE_MAX_WORD_CHARS:
                    if len(cache) >= _CACHE_MAX_ENTRIES:
                        cache.clear()
                    cache[piece] = ids
            out.extend(ids)

    def id_to_token(self, token_id: int) -> str:
        return self.tokens[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    # -- files ------------------------------------------------------------------------------------

    def save(self, directory: PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = {"tokens": self.tokens, "merges": self.merges}
        (directory / MODEL_FILE).write_text(json.dumps(model, ensure_ascii=False) + "\n", encoding="utf-8")
        self._write_metadata(directory, {"model": MODEL_FILE}, extra={
            "pretokenizer": list(self.pretokenizer), "bos_id": self.bos_id, "eos_id": self.eos_id,
            "pad_id": self.pad_id, "chat_template": self.chat_template})

    @classmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> ByteLevelBpeTokenizer:
        expected_size = metadata_field(metadata, "vocab_size", int, directory)
        special_tokens = metadata_field(metadata, "special_tokens", list, directory)
        pretokenizer = metadata_field(metadata, "pretokenizer", list, directory)
        ids = {name: metadata_field(metadata, f"{name}_id", int, directory) for name in ("bos", "eos", "pad")}
        chat_template = metadata.get("chat_template")
        model_path = metadata_file_path(metadata, "model", directory)
        model = read_json_file(model_path)
        if not (isinstance(model, dict) and isinstance(model.get("tokens"), list)
                and isinstance(model.get("merges"), list)):
            raise ValueError(f"corrupt tokenizer file {model_path}: expected lists 'tokens' and 'merges'")
        try:
            tokenizer = cls(model["tokens"], model["merges"], pretokenizer=pretokenizer,
                            special_tokens=special_tokens, bos_id=ids["bos"], eos_id=ids["eos"],
                            pad_id=ids["pad"], chat_template=chat_template if isinstance(chat_template, str) else None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"corrupt tokenizer file {model_path}: {error}") from None
        if tokenizer.vocab_size != expected_size:
            raise ValueError(f"corrupt tokenizer file {model_path}: has {tokenizer.vocab_size} tokens, "
                             f"but tokenizer.json says vocab_size {expected_size}")
        return tokenizer
