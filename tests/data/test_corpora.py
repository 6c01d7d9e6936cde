"""The corpus registry and the Corpus record."""

import dataclasses

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
    assert str(error.value) == f"unknown corpus 'nope'; available: {', '.join(available_corpora())}"


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
