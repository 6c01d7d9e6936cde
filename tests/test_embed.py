"""Embedding helpers on a tiny fake encoder whose hidden state at a position is known exactly."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import embed
from lmlab.tokenizers import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "apple", "##sauce", "pie", "i", "ate", "a", "."]


@dataclasses.dataclass(frozen=True)
class _Config:
    max_len: int = 32


class FakeEncoder(nnx.Module):
    """Hidden state = one-hot of the token id (scaled by 1 + position), so spans can be checked by hand."""

    def __init__(self):
        self.config = _Config()
        self.scale = nnx.Param(jnp.ones(()))

    def encode(self, tokens_BT, padding_mask_BT):
        positions_T = jnp.arange(tokens_BT.shape[1], dtype=jnp.float32)
        one_hot = jnp.eye(len(VOCAB), dtype=jnp.float32)[tokens_BT]
        return self.scale * one_hot * (1.0 + positions_T)[None, :, None]


def _tok():
    return WordPieceTokenizer(VOCAB)


def test_sentence_embedding_averages_real_tokens_only():
    tok, model = _tok(), FakeEncoder()
    vectors = embed.sentence_embeddings(model, tok, ["apple pie", "the apple"])
    # [CLS] apple pie [SEP] at positions 0..3 (weights 1..4); 12 padded positions must not count.
    expected = np.zeros(len(VOCAB))
    for position, name in enumerate(["[CLS]", "apple", "pie", "[SEP]"]):
        expected[VOCAB.index(name)] += position + 1
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [1.0, 1.0], rtol=1e-6)


def test_word_embedding_uses_the_word_span_and_skips_longer_words():
    tok, model = _tok(), FakeEncoder()
    occurrences, vectors = embed.word_embeddings(model, tok, ["i ate applesauce .", "the apple . apple pie"], "Apple")
    assert [(o.text, o.start, o.end) for o in occurrences] == [(1, 2, 3), (1, 4, 5)]
    apple = VOCAB.index("apple")
    assert vectors.shape == (2, len(VOCAB)) and vectors[:, apple].tolist() == [1.0, 1.0]


def test_word_that_does_not_occur_gives_no_occurrences():
    # Old code: np.asarray([]).reshape(0, -1) raised "cannot reshape array of size 0" (the CLI's
    # "'apple' does not occur in the texts" branch was unreachable).
    occurrences, vectors = embed.word_embeddings(FakeEncoder(), _tok(), ["the pie ."], "apple")
    assert occurrences == [] and vectors.shape == (0, len(VOCAB))


def test_word_outside_the_vocabulary_is_refused_not_matched_to_other_unknown_words():
    # Old code: "zebra" -> [UNK] matched the [UNK] of "yak" too, reporting 2 "zebra" occurrences.
    with pytest.raises(ValueError, match=r"--word 'zebra' is not in the vocabulary"):
        embed.word_embeddings(FakeEncoder(), _tok(), ["i ate a zebra . i ate a yak ."], "zebra")
