"""Properties every tokenizer kind must have; each test runs for "bpe", "char" and "bytebpe"."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmlab.tokenizers import Tokenizer, load_tokenizer, train_tokenizer

# Session fixtures are safe to share between examples: tokenizers are not mutated.
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

any_text = st.text(st.characters(blacklist_categories=("Cs",)))

# Pieces that stress whitespace handling, digit splitting, byte fallback, the
# sentencepiece meta symbol and special tokens, glued together in any order.
_FRAGMENTS = [
    " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\u2581", "\u2581\u2581", " \u2581 ",
    "0", "12", "3.14", "2024", "the", "The king", "HAMLET:\n", "o'er", "thou art",
    "\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "漢字", "日本語のテキスト",
    "é", "e\u0301", "ﬁ", "\x00", "\x7f", "\ufeff", "\u3000", "\u00a0",
    "<|endoftext|>", "<sep>", "<s>", "</s>", "<pad>", "<unk>", "<0x41>", "<|endoftext",
]
mixed_text = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), any_text), max_size=12
).map("".join)


def _byte_count(tokenizer: Tokenizer, text: str) -> int:
    return int(tokenizer.token_byte_lengths()[tokenizer.encode(text)].sum())


@PROPERTY_SETTINGS
@given(text=any_text)
def test_round_trip_arbitrary_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@PROPERTY_SETTINGS
@given(text=mixed_text)
def test_round_trip_mixed_fragments(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@PROPERTY_SETTINGS
@given(text=st.one_of(any_text, mixed_text))
def test_byte_lengths_sum_to_utf8_length(tokenizer, text):
    assert _byte_count(tokenizer, text) == len(text.encode("utf-8"))


@PROPERTY_SETTINGS
@given(text=st.one_of(any_text, mixed_text))
def test_ids_are_python_ints_in_range(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(type(i) is int and 0 <= i < tokenizer.vocab_size for i in ids)


def test_round_trip_and_byte_count_on_training_corpus(tokenizer, corpus):
    ids = tokenizer.encode(corpus)
    assert tokenizer.decode(ids) == corpus
    assert _byte_count(tokenizer, corpus) == len(corpus.encode("utf-8"))


def test_reserved_ids_are_distinct_and_decode_to_nothing(tokenizer):
    reserved = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id]
    assert len(set(reserved)) == 3
    assert all(0 <= i < tokenizer.vocab_size for i in reserved)
    assert not set(reserved) & set(tokenizer.special_ids.values())
    lengths = tokenizer.token_byte_lengths()
    assert lengths.dtype == np.int32 and lengths.shape == (tokenizer.vocab_size,)
    assert lengths[reserved].tolist() == [0, 0, 0]
    body = tokenizer.encode("Good night, sweet prince.")
    framed = [tokenizer.bos_id, *body, tokenizer.pad_id, tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(framed) == "Good night, sweet prince."


def test_reserved_names_in_text_are_plain_characters(tokenizer):
    text = "<s>x</s><pad>"
    ids = tokenizer.encode(text)
    assert not {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id} & set(ids)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids_that_decode_back(tokenizer, special_tokens):
    assert list(tokenizer.special_ids) == list(special_tokens)
    assert len(set(tokenizer.special_ids.values())) == len(special_tokens)
    for token, token_id in tokenizer.special_ids.items():
        assert tokenizer.encode(token) == [token_id]
        assert tokenizer.decode([token_id]) == token
        assert tokenizer.token_byte_lengths()[token_id] == len(token.encode("utf-8"))
    endoftext = tokenizer.special_ids["<|endoftext|>"]
    sep = tokenizer.special_ids["<sep>"]
    ids = tokenizer.encode("the end<|endoftext|>KING:<sep><sep>")
    assert ids.count(endoftext) == 1 and ids.count(sep) == 2
    assert ids[-2:] == [sep, sep]
    # A truncated special token is ordinary text.
    assert endoftext not in tokenizer.encode("<|endoftext|")


def test_decode_accepts_numpy_arrays(tokenizer):
    ids = tokenizer.encode("What light through yonder window breaks?")
    assert tokenizer.decode(np.asarray(ids, dtype=np.int32)) == tokenizer.decode(ids)
    assert tokenizer.decode([]) == ""
    assert tokenizer.encode("") == []


@pytest.mark.parametrize("bad_id", [-1, "vocab_size"])
def test_decode_rejects_out_of_range_ids(tokenizer, bad_id):
    bad = tokenizer.vocab_size if bad_id == "vocab_size" else bad_id
    with pytest.raises(ValueError, match=rf"token id {bad} is out of range \[0, {tokenizer.vocab_size}\)"):
        tokenizer.decode([0, bad])


def test_stray_byte_ids_decode_to_replacement_character(tokenizer):
    # A model can sample a lone continuation byte; decoding must not raise.
    lone_byte = tokenizer.encode("\U0001f600")[-1]
    assert tokenizer.decode([lone_byte]) == "\ufffd"


def test_encode_rejects_surrogates(tokenizer):
    with pytest.raises(ValueError, match="surrogate code point at position 1"):
        tokenizer.encode("a\ud800b")


def test_save_and_load_give_identical_tokenizer(tokenizer, corpus, tmp_path):
    tokenizer.save(tmp_path / "copy")
    loaded = load_tokenizer(tmp_path / "copy")
    assert type(loaded) is type(tokenizer)
    assert loaded.kind == tokenizer.kind
    assert loaded.vocab_size == tokenizer.vocab_size
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (
        tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id,
    )
    assert loaded.special_ids == tokenizer.special_ids
    np.testing.assert_array_equal(loaded.token_byte_lengths(), tokenizer.token_byte_lengths())
    probe = corpus + "\u2581 漢字 \U0001f600 <|endoftext|> 90210\t\n"
    assert loaded.encode(probe) == tokenizer.encode(probe)


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
def test_training_is_deterministic(kind, corpus, special_tokens, tmp_path):
    first, second = (
        train_tokenizer(kind, corpus, vocab_size=400, special_tokens=special_tokens, out_dir=tmp_path / name)
        for name in ("a", "b")
    )
    probe = corpus + " zebra \u2581 漢字 1234"
    assert first.encode(probe) == second.encode(probe)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
