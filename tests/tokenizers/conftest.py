"""Shared tokenizer fixtures: a small generated play-script corpus and tokenizers trained on it once."""

from __future__ import annotations

import random

import pytest

from lmlab.tokenizers import Tokenizer, train_tokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<sep>")
BPE_VOCAB_SIZE = 400

_SPEAKERS = ["HAMLET", "OPHELIA", "First Witch", "KING", "Nurse", "LADY MACBETH", "Clown"]
_WORDS = (
    "the and to of I you my a that in is not it me with his be your for this have he but "
    "what so him as thou will all do by shall no we our lord thy good sir they love more "
    "if come on let her now would was how well there then go night king sweet death heart "
    "hath o'er e'en speak fair time mine eyes upon blood father mother heaven hand ghost "
    "madness crown sword whither wherefore tomorrow nothing withal"
).split()
_PUNCTUATION = [",", ",", ";", ":", "!", "?", ".", "."]


def make_corpus(num_speeches: int, seed: int = 0) -> str:
    """Play-like text in the corpus format: "Speaker:\\nline\\nline\\n\\n" blocks.

    Deterministic for a seed. Includes digits so BPE digit splitting is exercised.
    """
    rng = random.Random(seed)
    speeches = []
    for _ in range(num_speeches):
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = rng.choices(_WORDS, k=rng.randint(3, 9))
            if rng.random() < 0.1:
                words.insert(rng.randrange(len(words)), str(rng.randint(1, 1999)))
            line = " ".join(words)
            lines.append(line[0].upper() + line[1:] + rng.choice(_PUNCTUATION))
        speeches.append(f"{rng.choice(_SPEAKERS)}:\n" + "\n".join(lines) + "\n\n")
    return "".join(speeches)


@pytest.fixture(scope="session")
def special_tokens() -> tuple[str, ...]:
    return SPECIAL_TOKENS


@pytest.fixture(scope="session")
def corpus() -> str:
    # About 150 speeches, ~400 lines, ~18 kB: enough for BPE_VOCAB_SIZE merges, fast to train.
    return make_corpus(150)


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus, tmp_path_factory) -> Tokenizer:
    out_dir = tmp_path_factory.mktemp("bpe") / "tokenizer"
    return train_tokenizer(
        "bpe", corpus, vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, out_dir=out_dir
    )


@pytest.fixture(scope="session")
def char_tokenizer(corpus, tmp_path_factory) -> Tokenizer:
    out_dir = tmp_path_factory.mktemp("char") / "tokenizer"
    return train_tokenizer(
        "char", corpus, vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, out_dir=out_dir
    )


@pytest.fixture(scope="session")
def bytebpe_tokenizer(corpus, tmp_path_factory) -> Tokenizer:
    out_dir = tmp_path_factory.mktemp("bytebpe") / "tokenizer"
    return train_tokenizer(
        "bytebpe", corpus, vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, out_dir=out_dir
    )


@pytest.fixture(scope="session", params=["bpe", "char", "bytebpe"])
def tokenizer(request) -> Tokenizer:
    """Each test using this runs once per tokenizer kind."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


@pytest.fixture(scope="session")
def make_text():
    """The corpus generator, for tests that need other sizes or seeds."""
    return make_corpus
