"""The corpus registry and the Corpus record."""

import dataclasses
import hashlib
import json

import pytest

from lmlab.data import Corpus, available_corpora, get_corpus, register_corpus
from lmlab.data import corpora


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(corpora, "_BUILDERS", dict(corpora._BUILDERS))


def tiny_corpus() -> Corpus:
    return Corpus(
        name="tiny",
        train_docs=("A:\nhello", "B:\nworld"),
        val_docs=("C:\nbye",),
        train_names=("a", "b"),
        val_names=("c",),
    )


def test_shakespeare_is_registered():
    assert "shakespeare" in available_corpora()
    assert available_corpora() == sorted(available_corpora())


def test_unknown_corpus_lists_the_available_ones():
    with pytest.raises(ValueError) as error:
        get_corpus("nope")
    assert str(error.value).startswith(f"unknown corpus 'nope'; available: {', '.join(available_corpora())}, or a path")


def test_register_and_get(isolated_registry):
    @register_corpus("tiny")
    def build() -> Corpus:
        return tiny_corpus()

    assert "tiny" in available_corpora()
    corpus = get_corpus("tiny")
    assert corpus == tiny_corpus()
    assert corpus.train_text == "A:\nhello\n\nB:\nworld"
    assert corpus.val_text == "C:\nbye"


def test_a_second_builder_under_a_taken_name_is_refused(isolated_registry):
    @register_corpus("tiny")
    def build() -> Corpus:
        return tiny_corpus()

    register_corpus("tiny")(build)  # the same function again (a module reload) is fine
    with pytest.raises(ValueError, match="already registered"):

        @register_corpus("tiny")
        def other_build() -> Corpus:
            return tiny_corpus()


def test_corpus_is_frozen_and_stores_tuples():
    corpus = Corpus("x", ["A:\na"], [], ["a"], [])
    assert corpus.train_docs == ("A:\na",) and corpus.val_names == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.name = "y"


def test_corpus_checks_names_against_docs():
    with pytest.raises(ValueError, match="2 train docs but 1 train names"):
        Corpus("x", ("a", "b"), (), ("a",), ())
    with pytest.raises(ValueError, match="both splits: a"):
        Corpus("x", ("a",), ("b",), ("a",), ("a",))


def _hash64(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _bucket(key: str) -> int:
    return _hash64(key) % 100


def test_a_folder_is_split_by_document_on_the_hash_of_its_path(tmp_path):
    names = [f"doc{i:02d}.txt" for i in range(60)]
    for name in reversed(names):  # creation order does not matter
        (tmp_path / name).write_text(f"text of {name}\n")
    corpus = get_corpus(str(tmp_path))
    want_val = [n for n in names if _bucket(n) < corpora.HELD_OUT_PERCENT]  # the naive rule
    assert 0 < len(want_val) < 60
    assert list(corpus.val_names) == want_val
    assert list(corpus.train_names) == [n for n in names if n not in want_val]
    assert list(corpus.val_docs) == [f"text of {n}\n" for n in want_val]
    assert get_corpus(str(tmp_path)) == corpus  # deterministic


def test_jsonl_split_follows_the_text_not_the_line_order(tmp_path):
    texts = [f"document number {i}" for i in range(80)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in reversed(texts)))
    a, b = get_corpus(str(tmp_path / "a.jsonl")), get_corpus(str(tmp_path / "b.jsonl"))
    assert set(a.val_docs) == set(b.val_docs) == {t for t in texts if _bucket(t) < corpora.HELD_OUT_PERCENT}
    assert set(a.train_docs) | set(a.val_docs) == set(texts) and not set(a.train_docs) & set(a.val_docs)


def test_few_documents_still_hold_one_out_and_one_document_is_cut_at_a_line(tmp_path):
    (tmp_path / "two").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "two" / name).write_text(name)
    two = get_corpus(str(tmp_path / "two"))
    assert two.val_names == (min(("a.txt", "b.txt"), key=_hash64),)  # neither hashes into the held-out buckets
    assert len(two.train_names) == 1
    text = "".join(f"line {i}\n" for i in range(100))
    (tmp_path / "one.txt").write_text(text)
    one = get_corpus(str(tmp_path / "one.txt"))
    assert one.train_docs[0] + one.val_docs[0] == text
    assert one.train_docs[0].endswith("\n") and len(one.train_docs[0]) <= 0.9 * len(text)
    assert len(one.val_docs[0]) < 0.11 * len(text)
