"""Character tokenizer specifics: id layout, byte fallback for unseen characters, special tokens."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.tokenizers import CharTokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers import char as char_module


def _reference_encode(tok: CharTokenizer, text: str) -> list[int]:
    """Straightforward per-character encoder, to check the vectorized one against."""
    specials = sorted(tok.special_ids, key=len, reverse=True)
    char_ids = {c: tok._first_char_id + i for i, c in enumerate(tok.characters)}
    ids, position = [], 0
    while position < len(text):
        match = next((s for s in specials if text.startswith(s, position)), None)
        if match is not None:
            ids.append(tok.special_ids[match])
            position += len(match)
            continue
        c = text[position]
        if c in char_ids:
            ids.append(char_ids[c])
        else:
            ids.extend(tok._first_byte_id + b for b in c.encode("utf-8"))
        position += 1
    return ids


def test_layout_reserved_specials_characters_bytes(char_tokenizer, corpus, special_tokens):
    tok = char_tokenizer
    characters = sorted(set(corpus))
    assert tok.kind == "char"
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.special_ids == {"<|endoftext|>": 3, "<sep>": 4}
    assert list(tok.characters) == characters
    assert tok.vocab_size == 3 + len(special_tokens) + len(characters) + 256
    first_char = 3 + len(special_tokens)
    for offset, c in enumerate(characters):
        assert tok.encode(c) == [first_char + offset]
    first_byte = tok.vocab_size - 256
    assert tok.decode(list(range(first_byte, first_byte + 128))) == "".join(map(chr, range(128)))


def test_vocab_size_argument_is_ignored(corpus, tmp_path):
    small = train_tokenizer("char", corpus, vocab_size=5, out_dir=tmp_path / "a")
    large = train_tokenizer("char", corpus, vocab_size=100_000, out_dir=tmp_path / "b")
    assert small.vocab_size == large.vocab_size == 3 + len(set(corpus)) + 256


def test_one_token_per_seen_character(char_tokenizer, corpus):
    assert len(char_tokenizer.encode(corpus)) == len(corpus)


def test_unseen_characters_fall_back_to_utf8_bytes(char_tokenizer):
    tok = char_tokenizer
    first_byte = tok.vocab_size - 256
    assert "漢" not in tok.characters
    assert tok.encode("漢") == [first_byte + b for b in "漢".encode("utf-8")]
    text = "King 漢字 \U0001f600 Zürich\u2581!"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) == len("King ") + 6 + 1 + 4 + 1 + len("Z") + 2 + len("rich") + 3 + 1


def test_longest_special_token_wins(tmp_path):
    tok = train_tokenizer("char", "abc", vocab_size=0, special_tokens=["<a>", "<a>b"], out_dir=tmp_path)
    assert tok.encode("<a>b<a>") == [tok.special_ids["<a>b"], tok.special_ids["<a>"]]


def test_empty_training_text_gives_pure_byte_tokenizer(tmp_path):
    tok = train_tokenizer("char", "", vocab_size=0, out_dir=tmp_path)
    assert tok.vocab_size == 3 + 256
    text = "anything at all \U0001f600"
    assert tok.encode(text) == [3 + b for b in text.encode("utf-8")]
    assert load_tokenizer(tmp_path).encode(text) == tok.encode(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",))) | st.text("<|endoftext|sep> KING:漢"))
def test_vectorized_encode_matches_reference(char_tokenizer, text):
    assert char_tokenizer.encode(text) == _reference_encode(char_tokenizer, text)


def test_training_corpus_encoding_matches_reference(char_tokenizer, corpus):
    text = corpus.replace("KING", "KING<|endoftext|>漢")
    assert char_tokenizer.encode(text) == _reference_encode(char_tokenizer, text)


def test_vocab_file_is_readable_json(char_tokenizer, tmp_path):
    char_tokenizer.save(tmp_path)
    content = json.loads((tmp_path / char_module.CHAR_VOCAB_FILE).read_text())
    assert content == {"characters": list(char_tokenizer.characters)}


@pytest.mark.parametrize(
    "characters, message",
    [
        (["b", "a"], "sorted and free of duplicates"),
        (["a", "a"], "sorted and free of duplicates"),
        (["ab"], "single characters"),
        ([7], "single characters"),
    ],
)
def test_corrupt_vocab_file_names_the_file(char_tokenizer, tmp_path, characters, message):
    char_tokenizer.save(tmp_path)
    vocab_path = tmp_path / char_module.CHAR_VOCAB_FILE
    vocab_path.write_text(json.dumps({"characters": characters}))
    with pytest.raises(ValueError, match=rf"^corrupt tokenizer file {vocab_path}: .*{message}"):
        load_tokenizer(tmp_path)


def test_vocab_file_disagreeing_with_metadata_is_corrupt(char_tokenizer, tmp_path):
    char_tokenizer.save(tmp_path)
    vocab_path = tmp_path / char_module.CHAR_VOCAB_FILE
    vocab_path.write_text(json.dumps({"characters": list(char_tokenizer.characters[:-1])}))
    with pytest.raises(ValueError, match="but tokenizer.json says"):
        load_tokenizer(tmp_path)


def test_missing_vocab_file_names_the_file(char_tokenizer, tmp_path):
    char_tokenizer.save(tmp_path)
    (tmp_path / char_module.CHAR_VOCAB_FILE).unlink()
    with pytest.raises(ValueError, match=rf"^tokenizer file not found: {tmp_path / char_module.CHAR_VOCAB_FILE}$"):
        load_tokenizer(tmp_path)
