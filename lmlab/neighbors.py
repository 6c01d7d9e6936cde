"""Nearest tokens in a model's static embedding matrix (`lmlab embed RUN --neighbors / --analogy`).

The input embedding table [V, D] of any family (GPT, BERT, encoder-decoder) is compared by cosine
similarity. A word is looked up as the tokenizer writes it inside a sentence: " word" for
tokenizers that keep the space with the word (byte-level BPE, sentencepiece), "word" otherwise,
whichever takes fewer tokens; a word of several tokens is the mean of their vectors (a crude
stand-in, reported as such). Analogies follow word2vec: normalize, then a - b + c.
Ids that decode to nothing (pad, bos, eos) are never neighbours.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Query:
    word: str
    ids: tuple[int, ...]  # the tokens the word became
    vector: np.ndarray  # unit length


def embedding_table(model) -> np.ndarray:
    """float32 [V, D]: the token embedding of a run's model (dequantized in a quantized run)."""
    return np.asarray(model.embed.table(), np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def lookup(tokenizer, table: np.ndarray, word: str) -> Query:
    """`word` as the fewest tokens of " word" and "word" (ties: " word"), and its unit vector."""
    if not word.strip():
        raise ValueError("need a word, got an empty string")
    ids = min((tokenizer.encode(" " + word.strip()), tokenizer.encode(word.strip())), key=len)
    return Query(word, tuple(ids), _unit(table[ids].mean(axis=0)))


def nearest(tokenizer, table: np.ndarray, vector: np.ndarray, k: int, exclude=()) -> list[tuple[int, float]]:
    """The `k` ids most cosine-similar to `vector`, best first, skipping `exclude` and empty pieces."""
    cosines = _unit(table) @ _unit(vector)
    lengths = tokenizer.token_byte_lengths()[: len(table)]
    skip = set(exclude) | set(np.flatnonzero(lengths == 0).tolist())
    order = np.argsort(-cosines, kind="stable")
    return [(int(i), float(cosines[i])) for i in order if int(i) not in skip][:k]


def neighbors(tokenizer, table: np.ndarray, word: str, k: int = 10) -> tuple[Query, list[tuple[int, float]]]:
    query = lookup(tokenizer, table, word)
    return query, nearest(tokenizer, table, query.vector, k, exclude=query.ids)


def analogy(tokenizer, table: np.ndarray, a: str, b: str, c: str, k: int = 10):
    """a - b + c (king - man + woman ~ queen): the queries and the nearest ids, inputs excluded."""
    queries = [lookup(tokenizer, table, w) for w in (a, b, c)]
    vector = queries[0].vector - queries[1].vector + queries[2].vector
    exclude = {i for q in queries for i in q.ids}
    return queries, nearest(tokenizer, table, vector, k, exclude=exclude)
