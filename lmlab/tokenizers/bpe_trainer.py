"""Byte-level BPE training from scratch, written to be read (the `bytebpe` tokenizer kind).

1. Pre-tokenize: a regex cuts the text into pieces (words with their leading space, numbers,
   punctuation runs, whitespace); merges never cross a piece boundary. Identical pieces are
   counted once with their frequency: natural text has far fewer distinct words than words.
2. Every piece starts as its UTF-8 bytes, symbols 0..255.
3. Repeat: take the adjacent symbol pair that occurs most often (weighted by word frequency),
   give it the next symbol (256, 257, ...), and rewrite every word that contains it.

Step 3 keeps the pair counts up to date instead of recounting the corpus after each merge: only
the words that contain the merged pair change, so only their pairs are subtracted and re-added.
An index from pair to the words that contain it finds those words, and a heap with lazy deletion
finds the most frequent pair. Ties go to the pair seen first (corpus order, then creation order),
as in Sennrich et al.'s reference implementation, which makes the result deterministic.

Every merge creates a new symbol, even when its bytes equal an earlier symbol's (two paths to the
same string): encoding a piece by applying the lowest-ranked pair first then gives exactly the
segmentation training produced (`ByteBpeTokenizer`).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

NUM_BYTES = 256
# How many of the words a merge touched `Merge.words` keeps (the most frequent ones) for --explain.
EXPLAIN_WORDS = 4

Pair = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Merge:
    """One learned merge: symbols `pair` become symbol 256 + rank."""

    pair: Pair
    left: bytes
    right: bytes
    count: int  # occurrences of the pair in the corpus when it was merged
    n_words: int  # distinct words (pre-tokenized pieces) it rewrote
    words: tuple[tuple[bytes, int], ...]  # the most frequent of them, with their frequencies

    @property
    def merged(self) -> bytes:
        return self.left + self.right


def count_pieces(texts: Iterable[str], pretokenize: Callable[[str], list[str]]) -> Counter[bytes]:
    """Frequency of each pre-tokenized piece, as UTF-8 bytes, in first-seen order."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(pretokenize(text))
    return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})


def learn_merges(word_counts: Mapping[bytes, int], n_merges: int) -> list[Merge]:
    """Up to `n_merges` merges learned from `word_counts` (fewer if every word becomes one symbol)."""
    return _Trainer(word_counts).run(n_merges)


class _Trainer:
    """The state of step 3: words as symbol lists, pair counts, the pair -> words index, a heap."""

    def __init__(self, word_counts: Mapping[bytes, int]) -> None:
        self.word_bytes = list(word_counts)
        self.words = [list(word) for word in self.word_bytes]
        self.freqs = list(word_counts.values())
        self.symbol_bytes = [bytes([b]) for b in range(NUM_BYTES)]
        self.counts: dict[Pair, int] = {}
        self.where: dict[Pair, set[int]] = {}  # may keep words that no longer hold the pair
        self.first_seen: dict[Pair, int] = {}  # tie-break: smaller wins
        for w, word in enumerate(self.words):
            self._add_pairs(w, word, self.freqs[w])
        self.heap = [(-n, self.first_seen[pair], pair) for pair, n in self.counts.items()]
        heapq.heapify(self.heap)

    def _add_pairs(self, w: int, word: list[int], freq: int) -> None:
        for pair in zip(word, word[1:]):
            self.counts[pair] = self.counts.get(pair, 0) + freq
            self.where.setdefault(pair, set()).add(w)
            self.first_seen.setdefault(pair, len(self.first_seen))

    def _remove_pairs(self, word: list[int], freq: int) -> None:
        for pair in zip(word, word[1:]):
            self.counts[pair] -= freq

    def _best_pair(self) -> Pair | None:
        """Pop the most frequent pair; heap entries whose count is out of date are dropped."""
        while self.heap:
            negative_count, _, pair = heapq.heappop(self.heap)
            if self.counts.get(pair, 0) == -negative_count > 0:
                return pair
        return None

    def run(self, n_merges: int) -> list[Merge]:
        merges = []
        for _ in range(n_merges):
            pair = self._best_pair()
            if pair is None:
                break
            merges.append(self._merge(pair))
        return merges

    def _merge(self, pair: Pair) -> Merge:
        count, new = self.counts[pair], len(self.symbol_bytes)
        self.symbol_bytes.append(self.symbol_bytes[pair[0]] + self.symbol_bytes[pair[1]])
        touched, changed = [], set()
        for w in sorted(self.where.pop(pair)):  # corpus order: new pairs' tie-break follows it
            word, freq = self.words[w], self.freqs[w]
            merged = merge_pair(word, pair, new)
            if len(merged) == len(word):  # a stale index entry: the word lost the pair earlier
                continue
            self._remove_pairs(word, freq)
            self._add_pairs(w, merged, freq)
            changed.update(zip(word, word[1:]))
            changed.update(zip(merged, merged[1:]))
            self.words[w] = merged
            touched.append(w)
        for p in changed:
            n = self.counts[p]
            if n > 0:
                heapq.heappush(self.heap, (-n, self.first_seen[p], p))
            else:  # gone from every word (the merged pair itself, at least)
                del self.counts[p]
                self.where.pop(p, None)
        top = sorted(touched, key=lambda w: -self.freqs[w])[:EXPLAIN_WORDS]
        return Merge(pair, self.symbol_bytes[pair[0]], self.symbol_bytes[pair[1]], count, len(touched),
                     tuple((self.word_bytes[w], self.freqs[w]) for w in top))


def merge_pair(word: list[int], pair: Pair, new: int) -> list[int]:
    """`word` with every occurrence of `pair`, left to right, replaced by `new`."""
    out, i, n = [], 0, len(word)
    left, right = pair
    while i < n:
        if i + 1 < n and word[i] == left and word[i + 1] == right:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def describe(merge: Merge, rank: int) -> str:
    """One --explain line: rank, the pair, its count and the words it touched."""
    words = " ".join(f"{show_bytes(word)}×{freq}" for word, freq in merge.words)
    more = f" (+{merge.n_words - len(merge.words)} more)" if merge.n_words > len(merge.words) else ""
    return (f"merge {rank + 1}: {show_bytes(merge.left)} + {show_bytes(merge.right)} -> "
            f"{show_bytes(merge.merged)}  count {merge.count} in {merge.n_words} words: {words}{more}")


def show_bytes(data: bytes) -> str:
    """A quoted, escaped rendering: text where the bytes are valid UTF-8, else a bytes literal."""
    try:
        return repr(data.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(data)
