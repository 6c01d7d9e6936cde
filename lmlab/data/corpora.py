"""A corpus is a named set of train and held-out documents; corpora are found by name."""

from __future__ import annotations

import dataclasses
from typing import Callable

DOC_SEPARATOR = "\n\n"


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
    """Build (or load from cache, as the builder decides) the corpus registered as ``name``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown corpus {name!r}; available: {', '.join(available_corpora())}"
        ) from None
    return builder()
