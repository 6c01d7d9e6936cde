"""Document filters applied before tokenization: exact deduplication and two quality thresholds.

Config keys (all off by default, so a corpus is used as its builder gives it):

  * `data.dedupe`: drop exact duplicate documents (same text). A held-out document also found in
    the training split is dropped from training, so validation never scores memorised text;
  * `data.min_chars`: drop documents shorter than this many characters (stubs, empty pages);
  * `data.min_printable`: drop documents whose share of printable characters (letters, digits,
    punctuation, spaces, line breaks and tabs) is below this (binary junk, mis-decoded files).
"""

from __future__ import annotations

import dataclasses
import hashlib

from lmlab.data.corpora import Corpus

_WHITESPACE = frozenset("\n\r\t")


def printable_share(text: str) -> float:
    if not text:
        return 1.0
    return sum(c.isprintable() or c in _WHITESPACE for c in text) / len(text)


@dataclasses.dataclass
class FilterCounts:
    duplicates: int = 0
    too_short: int = 0
    not_printable: int = 0

    def __bool__(self) -> bool:
        return bool(self.duplicates or self.too_short or self.not_printable)


def _keep(text: str, min_chars: int, min_printable: float, counts: FilterCounts) -> bool:
    if len(text) < min_chars:
        counts.too_short += 1
        return False
    if min_printable > 0 and printable_share(text) < min_printable:
        counts.not_printable += 1
        return False
    return True


def _filter_split(docs, names, settings: dict, seen: set[bytes], counts: FilterCounts):
    kept_docs, kept_names = [], []
    for text, name in zip(docs, names):
        if not _keep(text, settings["min_chars"], settings["min_printable"], counts):
            continue
        if settings["dedupe"]:
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            if digest in seen:
                counts.duplicates += 1
                continue
            seen.add(digest)
        kept_docs.append(text)
        kept_names.append(name)
    return kept_docs, kept_names


def filter_corpus(corpus: Corpus, *, dedupe: bool = False, min_chars: int = 0,
                  min_printable: float = 0.0) -> tuple[Corpus, FilterCounts]:
    """`corpus` without the documents the filters reject, and how many each rejected; the held-out
    split is filtered first, so a duplicate of a held-out document is removed from training."""
    counts, seen = FilterCounts(), set()
    if not (dedupe or min_chars > 0 or min_printable > 0):
        return corpus, counts
    settings = {"dedupe": dedupe, "min_chars": min_chars, "min_printable": min_printable}
    val_docs, val_names = _filter_split(corpus.val_docs, corpus.val_names, settings, seen, counts)
    train_docs, train_names = _filter_split(corpus.train_docs, corpus.train_names, settings, seen, counts)
    if not train_docs or not val_docs:
        split = "training" if not train_docs else "held-out"
        raise ValueError(f"corpus {corpus.name}: the filters (data.dedupe={dedupe}, data.min_chars={min_chars}, "
                         f"data.min_printable={min_printable}) leave no {split} documents")
    return Corpus(corpus.name, tuple(train_docs), tuple(val_docs), tuple(train_names), tuple(val_names)), counts
