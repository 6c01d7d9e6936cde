"""Parallel corpora (translation pairs): a named set of (source, target) pairs in fixed splits.

The monolingual `lmlab.data.Corpus` registry holds documents; translation needs aligned pairs,
so parallel corpora have their own small registry with the same shape:

    @register_parallel_corpus("my_en_fr")
    def my_en_fr() -> ParallelCorpus: ...

    get_parallel_corpus("my_en_fr").test   # tuple of (source, target) pairs

Splits are decided by the corpus (not by the trainer), so the held-out test pairs are the same for
every run and tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

Pair = tuple[str, str]

# Split by a hash of the source string: deterministic, independent of order and of the other
# pairs, and a source string (with all its duplicates) lands in exactly one split.
TEST_PERCENT, DEV_PERCENT = 10, 5


def split_of(source: str, test_percent: int = TEST_PERCENT, dev_percent: int = DEV_PERCENT) -> str:
    """'test', 'dev' or 'train' for a source string, from the first 8 bytes of its sha256."""
    bucket = int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + dev_percent:
        return "dev"
    return "train"


@dataclasses.dataclass(frozen=True)
class ParallelCorpus:
    """Source -> target pairs. `dev` is for model selection and tuning, `test` only for reporting."""

    name: str
    source_lang: str
    target_lang: str
    train: tuple[Pair, ...]
    dev: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def __post_init__(self) -> None:
        for split in ("train", "dev", "test"):
            object.__setattr__(self, split, tuple((str(s), str(t)) for s, t in getattr(self, split)))
        sources = [{s for s, _ in getattr(self, split)} for split in ("train", "dev", "test")]
        if (sources[0] & sources[1]) or (sources[0] & sources[2]) or (sources[1] & sources[2]):
            raise ValueError(f"parallel corpus {self.name!r}: a source string is in two splits")

    @classmethod
    def from_pairs(cls, name: str, source_lang: str, target_lang: str, pairs, **split_kwargs) -> ParallelCorpus:
        """Splits `pairs` by `split_of` of each source string, keeping their order within a split."""
        splits = {"train": [], "dev": [], "test": []}
        for source, target in pairs:
            splits[split_of(source, **split_kwargs)].append((source, target))
        return cls(name, source_lang, target_lang, **splits)


ParallelCorpusBuilder = Callable[[], ParallelCorpus]
_BUILDERS: dict[str, ParallelCorpusBuilder] = {}


def register_parallel_corpus(name: str) -> Callable[[ParallelCorpusBuilder], ParallelCorpusBuilder]:
    def decorate(builder: ParallelCorpusBuilder) -> ParallelCorpusBuilder:
        _BUILDERS[name] = builder
        return builder

    return decorate


def available_parallel_corpora() -> list[str]:
    return sorted(_BUILDERS)


def get_parallel_corpus(name: str) -> ParallelCorpus:
    if name not in _BUILDERS:
        raise ValueError(f"unknown parallel corpus {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]()
