"""Exact deduplication and the quality filters, with their counts."""

import pytest

from lmlab.data.corpora import Corpus
from lmlab.data.filters import filter_corpus, printable_share


def corpus(train, val):
    return Corpus("c", tuple(train), tuple(val), tuple(f"t{i}" for i in range(len(train))),
                  tuple(f"v{i}" for i in range(len(val))))


def test_printable_share_counts_line_breaks_and_tabs_as_printable():
    assert printable_share("ab\n\t") == 1.0
    assert printable_share("ab\x00\x01") == 0.5
    assert printable_share("") == 1.0


def test_off_by_default_returns_the_corpus_itself():
    c = corpus(["a", "a"], ["b"])
    assert filter_corpus(c) == (c, filter_corpus(c)[1]) and not filter_corpus(c)[1]


def test_dedupe_keeps_the_first_copy_and_drops_training_copies_of_held_out_documents():
    c = corpus(["x", "y", "x", "z", "held"], ["held", "w", "w"])
    got, counts = filter_corpus(c, dedupe=True)
    assert got.train_docs == ("x", "y", "z") and got.train_names == ("t0", "t1", "t3")
    assert got.val_docs == ("held", "w") and got.val_names == ("v0", "v1")
    assert counts.duplicates == 3 and counts.too_short == counts.not_printable == 0


def test_min_chars_and_min_printable_drop_documents_and_count_them():
    junk = "ok" + "\x00" * 8  # 20% printable
    c = corpus(["long enough", "tiny", junk, "also long enough"], ["held-out text"])
    got, counts = filter_corpus(c, min_chars=5, min_printable=0.9)
    assert got.train_docs == ("long enough", "also long enough")
    assert (counts.too_short, counts.not_printable, counts.duplicates) == (1, 1, 0)


def test_filters_that_leave_a_split_empty_are_an_error():
    with pytest.raises(ValueError, match="leave no held-out documents"):
        filter_corpus(corpus(["long enough"], ["s"]), min_chars=5)
