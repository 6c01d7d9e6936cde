"""The BPE trainer: the lecture's worked example, incremental counts equal a full recount."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.tokenizers import bpe_trainer
from lmlab.tokenizers.bpe_trainer import count_pieces, describe, learn_merges, merge_pair

# Jurafsky & Martin, Speech and Language Processing (3rd ed.), section 2.5: "_" ends each word.
LECTURE_CORPUS = {b"low_": 5, b"lowest_": 2, b"newer_": 6, b"wider_": 3, b"new_": 2}


def test_lecture_example_merge_order():
    merges = learn_merges(LECTURE_CORPUS, 8)
    assert [(m.left, m.right) for m in merges] == [
        (b"e", b"r"), (b"er", b"_"), (b"n", b"e"), (b"ne", b"w"),
        (b"l", b"o"), (b"lo", b"w"), (b"new", b"er_"), (b"low", b"_")]
    assert [m.count for m in merges] == [9, 9, 8, 8, 7, 7, 6, 5]
    # "n e" and "e w" tie at 8 after "er _": the pair seen first in the corpus wins, as in the book.
    assert [m.pair for m in merges[:2]] == [(ord("e"), ord("r")), (256, ord("_"))]


def test_explain_line_names_count_and_words():
    merges = learn_merges(LECTURE_CORPUS, 3)
    assert describe(merges[0], 0) == "merge 1: 'e' + 'r' -> 'er'  count 9 in 2 words: 'newer_'×6 'wider_'×3"
    assert describe(merges[2], 2) == "merge 3: 'n' + 'e' -> 'ne'  count 8 in 2 words: 'newer_'×6 'new_'×2"
    many = learn_merges({f"{c}ab".encode(): 10 - i for i, c in enumerate("cdefgh")} | {b"iab": 1}, 1)[0]
    assert describe(many, 0) == ("merge 1: 'a' + 'b' -> 'ab'  count 46 in 7 words: "
                                 "'cab'×10 'dab'×9 'eab'×8 'fab'×7 (+3 more)")
    assert bpe_trainer.show_bytes(b"\xe4\xb8") == r"b'\xe4\xb8'"  # half a character: a bytes literal


def test_stops_when_every_word_is_one_symbol():
    merges = learn_merges({b"ab": 3, b"c": 5}, 10)
    assert [(m.left, m.right, m.count) for m in merges] == [(b"a", b"b", 3)]


def test_overlapping_pairs_merge_left_to_right():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    merges = learn_merges({b"aaa": 1}, 2)  # "a a" counted twice in "aaa", then "aa a"
    assert [(m.left, m.right, m.count) for m in merges] == [(b"a", b"a", 2), (b"aa", b"a", 1)]


def _recount(words, freqs):
    counts = Counter()
    for word, freq in zip(words, freqs):
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcab ", min_size=1, max_size=12), st.integers(1, 9), min_size=1, max_size=12))
def test_incremental_counts_equal_a_full_recount(word_freqs):
    word_counts = {w.encode(): n for w, n in word_freqs.items()}
    merges = learn_merges(word_counts, 40)
    words, freqs = [list(w) for w in word_counts], list(word_counts.values())
    for k, merge in enumerate(merges):
        counts = _recount(words, freqs)
        assert merge.count == counts[merge.pair] == max(counts.values())
        touched = [w for w in words if merge_pair(w, merge.pair, 256 + k) != w]
        assert merge.n_words == len(touched)
        words = [merge_pair(w, merge.pair, 256 + k) for w in words]
    assert not _recount(words, freqs) or len(merges) == 40  # stopped early only when no pair was left


def test_count_pieces_keeps_first_seen_order():
    counts = count_pieces(["b a b", "a c"], lambda text: text.split(" "))
    assert list(counts.items()) == [(b"b", 2), (b"a", 2), (b"c", 1)]


def test_encoding_a_training_word_gives_the_segmentation_training_ended_with(make_text):
    # Every merge makes a new symbol, so merging by rank at encode time retraces training exactly.
    from lmlab.tokenizers.bytebpe import ByteBpeTokenizer
    from lmlab.tokenizers.bytelevel import merge_by_rank

    tokenizer = ByteBpeTokenizer(())
    trainer = bpe_trainer._Trainer(count_pieces([make_text(80, seed=5)], tokenizer.pretokenize))
    merges = trainer.run(250)
    ranks = {m.pair: (rank, 256 + rank) for rank, m in enumerate(merges)}
    assert len(merges) == 250
    for word, symbols in zip(trainer.word_bytes, trainer.words):
        assert merge_by_rank(list(word), ranks) == symbols
