"""Tokenizers trained on the user's corpus and stored in the run directory.

Trainable kinds:
  * "bpe":  sentencepiece BPE with byte fallback (`spm.BpeTokenizer`).
  * "char": one id per training character, UTF-8 bytes for the rest (`char.CharTokenizer`).
  * "bytebpe": lmlab's own readable byte-level BPE (`bytebpe.ByteBpeTokenizer`, `bpe_trainer`).
Pretrained kinds, built by `lmlab import` from a model's own vocabulary:
  * "bytelevel_bpe": GPT-2 / Llama-3 / SmolLM2 byte-level BPE (`bytelevel.ByteLevelBpeTokenizer`).
  * "wordpiece": BERT WordPiece, lower-casing and lossy (`wordpiece.WordPieceTokenizer`).

The trainable kinds are lossless (`decode(encode(s)) == s` for any string without lone
surrogates), reserve pad/bos/eos ids, and report how many UTF-8 bytes each id
decodes to, for bits-per-byte.

    tokenizer = train_tokenizer("bpe", text, vocab_size=2048, out_dir=run_dir / "tokenizer")
    tokenizer = load_tokenizer(run_dir / "tokenizer")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmlab.tokenizers.base import METADATA_FILE, PathLike, Tokenizer, read_metadata
from lmlab.tokenizers.bytebpe import ByteBpeTokenizer
from lmlab.tokenizers.bytelevel import ByteLevelBpeTokenizer
from lmlab.tokenizers.char import CharTokenizer
from lmlab.tokenizers.spm import BpeTokenizer
from lmlab.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "BpeTokenizer",
    "ByteBpeTokenizer",
    "ByteLevelBpeTokenizer",
    "CharTokenizer",
    "METADATA_FILE",
    "TOKENIZER_KINDS",
    "Tokenizer",
    "WordPieceTokenizer",
    "load_tokenizer",
    "train_tokenizer",
]

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    "bpe": BpeTokenizer,
    "char": CharTokenizer,
    "bytebpe": ByteBpeTokenizer,
    "bytelevel_bpe": ByteLevelBpeTokenizer,  # pretrained (imported) only
    "wordpiece": WordPieceTokenizer,  # pretrained (imported) only
}


def _tokenizer_class(kind: object) -> type[Tokenizer]:
    if kind not in TOKENIZER_KINDS:
        raise ValueError(
            f"unknown tokenizer kind '{kind}'; expected one of: {', '.join(TOKENIZER_KINDS)}"
        )
    return TOKENIZER_KINDS[kind]  # type: ignore[index]


def train_tokenizer(
    kind: str,
    text: str,
    *,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    out_dir: PathLike,
) -> Tokenizer:
    """Train a tokenizer of `kind` on `text`, save it into `out_dir` (created if needed), return it.

    `vocab_size` is the exact number of ids for "bpe" and "bytebpe". The "char" kind ignores
    it: its size is 3 reserved ids + special tokens + distinct characters of
    `text` + 256 byte ids.

    `special_tokens` are user-defined tokens (e.g. "<|endoftext|>") that always
    encode to one id wherever they appear in text. They must be non-empty,
    contain no whitespace or U+2581, and differ from the reserved names
    <pad>, <s>, </s>, <unk> and the byte-token names <0x00>..<0xFF>.
    """
    tokenizer = _tokenizer_class(kind).train(
        text, vocab_size=vocab_size, special_tokens=special_tokens
    )
    tokenizer.save(out_dir)
    return tokenizer


def load_tokenizer(directory: PathLike) -> Tokenizer:
    """Load a tokenizer saved by `train_tokenizer` or `Tokenizer.save`.

    Missing or corrupt files raise a one-line ValueError naming the file.
    """
    metadata = read_metadata(directory)
    try:
        tokenizer_class = _tokenizer_class(metadata["kind"])
    except ValueError as error:
        raise ValueError(f"{Path(directory) / METADATA_FILE}: {error}") from None
    return tokenizer_class.load(directory, metadata)
