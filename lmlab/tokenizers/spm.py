"""Lossless BPE tokenizer backed by sentencepiece.

sentencepiece is configured so that no information is lost: identity
normalization, no dummy prefix, whitespace kept as is, every training
character in the vocabulary, and byte fallback for everything else.

Two details keep `decode(encode(s)) == s` for every string:
  * sentencepiece writes spaces as U+2581 ("▁"), so a literal U+2581 in the
    input would come back as a space. `encode` cuts the text at literal U+2581
    and emits that character as its three UTF-8 byte tokens instead.
  * Decoding does not go through sentencepiece: each id maps to its exact
    bytes (see `base.Tokenizer`), which also gives `token_byte_lengths`.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sentencepiece

from lmlab.tokenizers.base import (
    BOS_PIECE,
    EOS_PIECE,
    PAD_PIECE,
    SPM_META_SYMBOL,
    UNK_PIECE,
    PathLike,
    Tokenizer,
    metadata_field,
    metadata_file_path,
    metadata_special_tokens,
    one_line,
    require_text,
    validate_special_tokens,
)

MODEL_FILE = "tokenizer.model"

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_BYTE_TOKENS = 256

# Training sentences are the lines of the text. sentencepiece silently skips
# sentences longer than max_sentence_length bytes, so long lines are cut into
# segments that always fit (4 bytes per character at most).
TRAINING_SEGMENT_CHARS = 4096
MAX_SENTENCE_BYTES = 4 * TRAINING_SEGMENT_CHARS

# Beyond this many sentences, train on an evenly spaced subset. We sample
# ourselves (deterministically) instead of sentencepiece's random sampling.
MAX_TRAINING_SENTENCES = 2_000_000

# Texts longer than this are encoded in newline-aligned chunks, in one batch
# call that sentencepiece spreads over threads. The ids are the same as for
# the whole text at once: no piece contains a newline (training sentences
# never do, and special tokens may not contain whitespace), so no BPE merge
# crosses one. sentencepiece's BPE encoder slows down on very long inputs;
# a few kB per chunk was ~3x faster than whole-text encoding on a 4.4 MB corpus.
ENCODE_CHUNK_CHARS = 8192

# Encoded and decoded when a model is loaded, to refuse models that were not
# trained with lossless settings (e.g. a dummy prefix or NFKC normalization).
_LOSSLESS_PROBE = "  Two  spaces,\ttab\r\nﬁ ①½ 12 \x00 "

_TRAINER_OPTIONS: dict[str, Any] = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    character_coverage=1.0,
    pad_id=PAD_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    pad_piece=PAD_PIECE,
    bos_piece=BOS_PIECE,
    eos_piece=EOS_PIECE,
    unk_piece=UNK_PIECE,
    input_sentence_size=0,  # use every sentence we pass; see MAX_TRAINING_SENTENCES
    shuffle_input_sentence=False,
    max_sentence_length=MAX_SENTENCE_BYTES,
    minloglevel=2,  # sentencepiece logs progress to stderr at INFO level otherwise
)


def _num_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


class BpeTokenizer(Tokenizer):
    """sentencepiece BPE with byte fallback; ids 0-3 are pad, bos, eos, unk."""

    kind = "bpe"

    def __init__(self, model_proto: bytes, special_tokens: Sequence[str] = ()) -> None:
        """Wrap a serialized sentencepiece model trained by `train` (or with its settings)."""
        special_tokens = validate_special_tokens(special_tokens)
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError, TypeError) as error:
            raise ValueError(f"not a valid sentencepiece model ({one_line(error)})") from None

        self._model_proto = bytes(model_proto)
        self._processor = processor
        byte_ids = _check_reserved_and_byte_ids(processor)
        special_ids = _special_token_ids(processor, special_tokens)
        # A literal U+2581 is emitted as its UTF-8 bytes; see the module docstring.
        self._meta_symbol_ids = [byte_ids[b] for b in SPM_META_SYMBOL.encode("utf-8")]

        super().__init__(
            _piece_bytes(processor),
            pad_id=PAD_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            special_ids=special_ids,
        )
        if self.decode(self.encode(_LOSSLESS_PROBE)) != _LOSSLESS_PROBE:
            raise ValueError("sentencepiece model does not round-trip text; it was not trained losslessly")

    @classmethod
    def train(
        cls, text: str, *, vocab_size: int, special_tokens: Sequence[str] = ()
    ) -> BpeTokenizer:
        """Train a BPE model with exactly `vocab_size` ids on `text`."""
        require_text(text)
        special_tokens = validate_special_tokens(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        fixed_ids = 4 + len(special_tokens) + NUM_BYTE_TOKENS
        if vocab_size <= fixed_ids:
            raise ValueError(
                f"vocab_size {vocab_size} is too small for a BPE tokenizer: {fixed_ids} ids go to "
                "pad/bos/eos/unk, special tokens and byte fallback, and each distinct "
                "character of the text needs one more"
            )
        sentences = _training_sentences(text)
        if not sentences:
            raise ValueError("cannot train a BPE tokenizer on empty text")

        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                vocab_size=vocab_size,
                user_defined_symbols=list(special_tokens),
                num_threads=_num_threads(),
                **_TRAINER_OPTIONS,
            )
        except RuntimeError as error:
            raise ValueError(_explain_training_error(error, vocab_size)) from None
        return cls(model.getvalue(), special_tokens)

    def encode(self, text: str) -> list[int]:
        require_text(text)
        if SPM_META_SYMBOL not in text:
            return self._encode_without_meta_symbol(text)
        ids: list[int] = []
        for index, segment in enumerate(text.split(SPM_META_SYMBOL)):
            if index:
                ids.extend(self._meta_symbol_ids)
            ids.extend(self._encode_without_meta_symbol(segment))
        return ids

    def _encode_without_meta_symbol(self, text: str) -> list[int]:
        if len(text) <= ENCODE_CHUNK_CHARS:
            return self._processor.encode(text)
        chunks = _split_at_newlines(text, ENCODE_CHUNK_CHARS)
        if len(chunks) == 1:
            return self._processor.encode(text)
        encoded = self._processor.encode(chunks, num_threads=_num_threads())
        return list(itertools.chain.from_iterable(encoded))

    def save(self, directory: PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self._model_proto)
        self._write_metadata(directory, {"model": MODEL_FILE})

    @classmethod
    def load(cls, directory: PathLike, metadata: Mapping[str, Any]) -> BpeTokenizer:
        special_tokens = metadata_special_tokens(metadata, directory)
        expected_size = metadata_field(metadata, "vocab_size", int, directory)
        model_path = metadata_file_path(metadata, "model", directory)
        try:
            model_proto = model_path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"tokenizer file not found: {model_path}") from None
        except OSError as error:
            raise ValueError(f"cannot read tokenizer file {model_path}: {one_line(error)}") from None
        try:
            tokenizer = cls(model_proto, special_tokens)
        except ValueError as error:
            raise ValueError(f"corrupt tokenizer file {model_path}: {error}") from None
        if tokenizer.vocab_size != expected_size:
            raise ValueError(
                f"corrupt tokenizer file {model_path}: has {tokenizer.vocab_size} pieces, "
                f"but tokenizer.json says vocab_size {expected_size}"
            )
        return tokenizer


def _training_sentences(text: str) -> list[str]:
    """Lines of `text`, cut at literal U+2581 (as `encode` does) and to a length sentencepiece keeps."""
    sentences = [
        segment[start : start + TRAINING_SEGMENT_CHARS]
        for line in text.split("\n")
        for segment in line.split(SPM_META_SYMBOL)
        for start in range(0, len(segment), TRAINING_SEGMENT_CHARS)
    ]
    if len(sentences) > MAX_TRAINING_SENTENCES:
        step = len(sentences) / MAX_TRAINING_SENTENCES
        sentences = [sentences[int(i * step)] for i in range(MAX_TRAINING_SENTENCES)]
    return sentences


def _split_at_newlines(text: str, min_chunk_chars: int) -> list[str]:
    """Cut `text` after newlines into chunks of at least `min_chunk_chars` (the last may be shorter)."""
    chunks = []
    start = 0
    while start < len(text):
        newline = text.find("\n", start + min_chunk_chars - 1)
        end = len(text) if newline < 0 else newline + 1
        chunks.append(text[start:end])
        start = end
    return chunks


def _check_reserved_and_byte_ids(processor: sentencepiece.SentencePieceProcessor) -> dict[int, int]:
    """Check the fixed id layout and return {byte value: id} for the byte-fallback tokens."""
    layout = {
        "pad": (processor.pad_id(), PAD_ID),
        "bos": (processor.bos_id(), BOS_ID),
        "eos": (processor.eos_id(), EOS_ID),
        "unk": (processor.unk_id(), UNK_ID),
    }
    for name, (actual, expected) in layout.items():
        if actual != expected:
            raise ValueError(f"sentencepiece model has {name} id {actual}, expected {expected}")
    byte_ids = {}
    for value in range(NUM_BYTE_TOKENS):
        token_id = processor.piece_to_id(f"<0x{value:02X}>")
        if not processor.is_byte(token_id):
            raise ValueError("sentencepiece model lacks byte-fallback tokens")
        byte_ids[value] = token_id
    return byte_ids


def _special_token_ids(
    processor: sentencepiece.SentencePieceProcessor, special_tokens: Sequence[str]
) -> dict[str, int]:
    special_ids = {}
    for token in special_tokens:
        token_id = processor.piece_to_id(token)
        if token_id == UNK_ID or processor.is_control(token_id) or processor.is_byte(token_id):
            raise ValueError(f"sentencepiece model has no piece for special token {token!r}")
        special_ids[token] = token_id
    return special_ids


def _piece_bytes(processor: sentencepiece.SentencePieceProcessor) -> list[bytes]:
    """The exact bytes each id decodes to. Control and unknown ids decode to nothing."""
    table = []
    for token_id in range(processor.get_piece_size()):
        piece = processor.id_to_piece(token_id)
        if processor.is_control(token_id) or processor.is_unknown(token_id):
            table.append(b"")
        elif processor.is_byte(token_id):
            table.append(bytes([int(piece[3:5], 16)]))
        else:
            table.append(piece.replace(SPM_META_SYMBOL, " ").encode("utf-8"))
    return table


_SPM_ERROR_PREFIX = re.compile(r"^\w+: \S+\(\d+\) \[[^\]]*\]\s*")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)")
_TOO_LARGE = re.compile(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)")


def _explain_training_error(error: RuntimeError, vocab_size: int) -> str:
    """Turn sentencepiece's `INTERNAL: file(line) [check] message` into a one-line explanation."""
    detail = _SPM_ERROR_PREFIX.sub("", one_line(error))
    if match := _TOO_SMALL.search(detail):
        return (
            f"vocab_size {vocab_size} is too small for this text: it needs at least "
            f"{match.group(1)} ids (reserved, special and byte tokens plus one per distinct character)"
        )
    if match := _TOO_LARGE.search(detail):
        return (
            f"vocab_size {vocab_size} is too large for this text: sentencepiece BPE can build "
            f"at most {match.group(1)} ids from it; use a smaller vocab_size or more text"
        )
    return f"sentencepiece failed to train a BPE tokenizer: {detail or one_line(error)}"
