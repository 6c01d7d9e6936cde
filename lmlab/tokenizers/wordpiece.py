"""BERT's WordPiece tokenizer (uncased BERT, MiniLM, ...) from a pretrained vocab.txt.

Encoding, as HF `tokenizers` does it for BERT:
  1. the special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) are cut out of the raw text, one id each;
  2. normalization: drop NUL, U+FFFD and control/format characters, turn whitespace into spaces,
     put spaces around CJK ideographs (each becomes its own word), strip accents (NFD, then drop
     nonspacing marks) and lower-case;
  3. split at whitespace, and around every punctuation character (Unicode P* and ASCII symbols);
  4. WordPiece per word: greedy longest match first, continuations looked up as "##piece"; a word
     with no full match, or longer than 100 characters, becomes [UNK].

`encode` returns the text's ids without [CLS]/[SEP]; `encode_pair`-style framing is the caller's
(`bos_id` is [CLS], `eos_id` is [SEP]).

Decoding is lossy by nature: case, accents, spacing around punctuation and unknown words are gone
after step 2-4. `decode` joins words with single spaces and glues "##" continuations to the piece
before; [CLS]/[SEP]/[PAD] decode to nothing. `token_byte_lengths` counts a piece's UTF-8 bytes
without its "##" prefix (and without the space `decode` may put before it).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

from lmlab.tokenizers.base import (
    PathLike,
    PretrainedTokenizer,
    _checked_id_list,
    metadata_field,
    metadata_file_path,
    read_text_file,
)

VOCAB_FILE = "vocab.txt"
CONTINUATION = "##"
SPECIAL_NAMES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
MAX_INPUT_CHARS_PER_WORD = 100

# The Unicode White_Space property (what HF's Rust code tests), minus the C* characters that the
# control filter drops first (U+000B, U+000C, U+0085).
_WHITESPACE = frozenset("\t\n\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                        "\u200a\u2028\u2029\u202f\u205f\u3000")
# HF `tokenizers` starts the sixth range at 0x2B920 (Google's BERT: 0x2B820); ids follow HF.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Words: runs of anything but whitespace and punctuation; each punctuation character alone.
# ASCII symbols such as $ + < = > ^ ` | ~ count as punctuation for BERT, though Unicode says Symbol.
_WORD_OR_PUNCT = regex.compile(r"""[\p{P}!-/:-@\[-`{-~]|[^\s\p{P}!-/:-@\[-`{-~]+""")


def _is_cjk(code: int) -> bool:
    return any(low <= code <= high for low, high in _CJK_RANGES)


def normalize(text: str, *, lowercase: bool = True, strip_accents: bool = True,
              split_cjk: bool = True) -> str:
    """BERT's normalizer: clean control characters and whitespace, space out CJK, strip accents, lower."""
    out = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd":
            continue
        if ch in _WHITESPACE:
            out.append(" ")
            continue
        category = unicodedata.category(ch)
        if category[0] == "C" and category != "Cn":  # HF keeps unassigned code points (-> [UNK])
            continue
        if split_cjk and _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    if lowercase:  # per character, as HF does: no context-dependent final sigma (str.lower gives "ς")
        text = "".join(c.lower() for c in text)
    return text


class WordPieceTokenizer(PretrainedTokenizer):
    """Pretrained BERT WordPiece; ids are the vocab.txt line numbers."""

    kind = "wordpiece"
    import_command = "lmlab import minilm"

    def __init__(self, vocab: Sequence[str], *, lowercase: bool = True, strip_accents: bool | None = None,
                 split_cjk: bool = True, max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD) -> None:
        """`strip_accents` None follows `lowercase`, as in BERT's tokenizer config."""
        self.vocab = list(vocab)
        self._ids = {token: i for i, token in enumerate(self.vocab)}
        if len(self._ids) != len(self.vocab):
            raise ValueError("vocabulary has duplicate entries")
        missing = [name for name in SPECIAL_NAMES.values() if name not in self._ids]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {', '.join(missing)}")
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.split_cjk = bool(split_cjk)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        ids = {key: self._ids[name] for key, name in SPECIAL_NAMES.items()}
        self.unk_id, self.mask_id = ids["unk"], ids["mask"]
        special_ids = {name: self._ids[name] for name in SPECIAL_NAMES.values()}
        self._word_cache: dict[str, list[int]] = {}

        silent = {ids["pad"], ids["cls"], ids["sep"]}
        piece_bytes = [b"" if i in silent else t.removeprefix(CONTINUATION).encode("utf-8")
                       for i, t in enumerate(self.vocab)]
        super().__init__(piece_bytes, pad_id=ids["pad"], bos_id=ids["cls"], eos_id=ids["sep"],
                         special_ids=special_ids)

    # -- encoding (`PretrainedTokenizer.encode` cuts out special tokens, then calls `_encode_ordinary`) --

    def words(self, text: str) -> list[str]:
        """The normalized words and punctuation marks WordPiece runs on."""
        text = normalize(text, lowercase=self.lowercase, strip_accents=self.strip_accents, split_cjk=self.split_cjk)
        return _WORD_OR_PUNCT.findall(text)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._word_cache
        for word in self.words(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._wordpiece(word)
                if len(cache) < 200_000:
                    cache[word] = ids
            out.extend(ids)

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                token_id = self._ids.get(piece)
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:  # no prefix of the rest is in the vocabulary: the whole word is unknown
                return [self.unk_id]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Words joined by spaces, "##" pieces glued on; lossy (see the module docstring)."""
        words: list[str] = []
        for token_id in _checked_id_list(ids, self.vocab_size):
            piece = self._piece_bytes[token_id].decode("utf-8")
            if not piece:
                continue
            if self.vocab[token_id].startswith(CONTINUATION) and words:
                words[-1] += piece
            else:
                words.append(piece)
        return " ".join(words)

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    # -- files ------------------------------------------------------------------------------------

    def save(self, directory: PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_FILE).write_text("".join(t + "\n" for t in self.vocab), encoding="utf-8")
        self._write_metadata(directory, {"vocab": VOCAB_FILE}, extra={
            "lowercase": self.lowercase, "strip_accents": self.strip_accents, "split_cjk": self.split_cjk,
            "max_input_chars_per_word": self.max_input_chars_per_word})

    @classmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> WordPieceTokenizer:
        expected_size = metadata_field(metadata, "vocab_size", int, directory)
        options = {key: metadata_field(metadata, key, bool, directory)
                   for key in ("lowercase", "strip_accents", "split_cjk")}
        max_chars = metadata_field(metadata, "max_input_chars_per_word", int, directory)
        vocab_path = metadata_file_path(metadata, "vocab", directory)
        tokenizer = from_vocab_file(vocab_path, max_input_chars_per_word=max_chars, **options)
        if tokenizer.vocab_size != expected_size:
            raise ValueError(f"corrupt tokenizer file {vocab_path}: has {tokenizer.vocab_size} tokens, "
                             f"but tokenizer.json says vocab_size {expected_size}")
        return tokenizer


def read_vocab_file(path: PathLike) -> list[str]:
    """vocab.txt: one token per line, the line number is the id."""
    text = read_text_file(path)
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def from_vocab_file(path: PathLike, **options) -> WordPieceTokenizer:
    try:
        return WordPieceTokenizer(read_vocab_file(path), **options)
    except ValueError as error:
        raise ValueError(f"corrupt tokenizer file {path}: {error}") from None
