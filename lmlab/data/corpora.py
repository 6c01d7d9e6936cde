"""A corpus is a named set of train and held-out documents; corpora are found by name or by path.

`get_corpus(name_or_path)`: a registered corpus (`shakespeare`, `python_stdlib`, ...) or the user's
own files (lmlab.data.text_files), split by document: a document is held out when the sha256 of its
key (a file's relative path, a JSON line's text) falls into HELD_OUT_PERCENT of 100 buckets, so the
split depends neither on the order of files nor on the machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Callable

from lmlab.data.text_files import Document, is_path_spec, read_documents

log = logging.getLogger("lmlab")

DOC_SEPARATOR = "\n\n"
HELD_OUT_PERCENT = 10  # nanoGPT's 90/10; ~ Shakespeare's four held-out plays (9.8%)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Normalized documents of one corpus, split into train and validation.

    Splits are by document (e.g. whole plays), so validation measures generalization to
    unseen works rather than to unseen lines of works already trained on.
    """

    name: str
    train_docs: tuple[str, ...]
    val_docs: tuple[str, ...]
    train_names: tuple[str, ...]
    val_names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Builders may hand over lists; store tuples so the frozen corpus is really immutable.
        for field in ("train_docs", "val_docs", "train_names", "val_names"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for split in ("train", "val"):
            docs, names = getattr(self, f"{split}_docs"), getattr(self, f"{split}_names")
            if len(docs) != len(names):
                raise ValueError(
                    f"corpus {self.name!r}: {len(docs)} {split} docs but {len(names)} {split} names"
                )
        shared = set(self.train_names) & set(self.val_names)
        if shared:
            raise ValueError(f"corpus {self.name!r}: documents in both splits: {', '.join(sorted(shared))}")

    @property
    def train_text(self) -> str:
        return DOC_SEPARATOR.join(self.train_docs)

    @property
    def val_text(self) -> str:
        return DOC_SEPARATOR.join(self.val_docs)


CorpusBuilder = Callable[[], Corpus]

_BUILDERS: dict[str, CorpusBuilder] = {}


def register_corpus(name: str) -> Callable[[CorpusBuilder], CorpusBuilder]:
    """Decorator: register a zero-argument function that builds the corpus ``name``."""

    def decorate(builder: CorpusBuilder) -> CorpusBuilder:
        existing = _BUILDERS.get(name)
        # Re-registering the same function (a module reload) is harmless; a different
        # function under a taken name is almost certainly a copy-paste mistake.
        if existing is not None and _qualified_name(existing) != _qualified_name(builder):
            raise ValueError(
                f"corpus {name!r} is already registered by {_qualified_name(existing)}"
            )
        _BUILDERS[name] = builder
        return builder

    return decorate


def _qualified_name(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def available_corpora() -> list[str]:
    return sorted(_BUILDERS)


def get_corpus(name: str) -> Corpus:
    """Build (or load from cache, as the builder decides) the corpus registered as ``name``, or
    read the files ``name`` points at (a path, folder or glob; lmlab.data.text_files)."""
    if name in _BUILDERS:
        return _BUILDERS[name]()
    if is_path_spec(name):
        return split_documents(name, read_documents(name))
    raise ValueError(f"unknown corpus {name!r}; available: {', '.join(available_corpora())}, or a path to "
                     "a text file, a folder or glob of them, or a .jsonl / .jsonl.gz file of {\"text\": ...} lines")


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split_documents(name: str, docs: list[Document], percent: int = HELD_OUT_PERCENT) -> Corpus:
    """Train / held-out by document (see the module docstring), order kept within each split.

    Too few documents for the hash to hold one out (or to leave one for training): the one with
    the smallest hash is held out. A single document is cut at the last line break before 90% of
    its length (the nanoGPT split), the only split one document allows."""
    if len(docs) == 1:
        return _split_one(name, docs[0], percent)
    held = [_bucket(doc.key) % 100 < percent for doc in docs]
    if all(held) or not any(held):
        first = min(range(len(docs)), key=lambda i: _bucket(docs[i].key))
        held = [i == first for i in range(len(docs))]
    train = [doc for doc, h in zip(docs, held) if not h]
    val = [doc for doc, h in zip(docs, held) if h]
    return Corpus(name, tuple(d.text for d in train), tuple(d.text for d in val),
                  tuple(d.name for d in train), tuple(d.name for d in val))


def _split_one(name: str, doc: Document, percent: int) -> Corpus:
    cut = int(len(doc.text) * (100 - percent) / 100)
    line_break = doc.text.rfind("\n", 0, cut)
    cut = line_break + 1 if line_break > 0 else cut
    if not 0 < cut < len(doc.text):
        raise ValueError(f"data.corpus={name}: one document of {len(doc.text)} characters cannot be split into "
                         "training and held-out text")
    log.warning("corpus %s: a single document; its last %d%% is held out (split by position, not by document)",
                name, percent)
    return Corpus(name, (doc.text[:cut],), (doc.text[cut:],), (f"{doc.name}[:{cut}]",), (f"{doc.name}[{cut}:]",))
