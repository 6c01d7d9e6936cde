"""The public entry points: train_tokenizer / load_tokenizer, saved files, and input validation."""

from __future__ import annotations

import json

import pytest

from lmlab.tokenizers import (
    BpeTokenizer,
    ByteBpeTokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

KINDS = {"bpe": BpeTokenizer, "char": CharTokenizer, "bytebpe": ByteBpeTokenizer}


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
def test_train_saves_into_new_nested_directory(kind, corpus, special_tokens, tmp_path):
    out_dir = tmp_path / "run" / "tokenizer"
    tok = train_tokenizer(kind, corpus, vocab_size=400, special_tokens=special_tokens, out_dir=str(out_dir))
    assert isinstance(tok, Tokenizer) and isinstance(tok, KINDS[kind])
    metadata = json.loads((out_dir / "tokenizer.json").read_text())
    assert metadata["kind"] == kind
    assert metadata["vocab_size"] == tok.vocab_size
    assert metadata["special_tokens"] == list(special_tokens)
    for file_name in metadata["files"].values():
        assert (out_dir / file_name).is_file()
    loaded = load_tokenizer(out_dir)
    assert loaded.encode(corpus) == tok.encode(corpus)


def test_unknown_kind_message():
    with pytest.raises(ValueError) as info:
        train_tokenizer("unigram", "text", vocab_size=10, out_dir="/nonexistent/never-created")
    assert str(info.value) == ("unknown tokenizer kind 'unigram'; expected one of: "
                               "bpe, char, bytebpe, bytelevel_bpe, wordpiece")


def test_load_from_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=rf"^tokenizer file not found: {missing / 'tokenizer.json'}$"):
        load_tokenizer(missing)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "corrupt tokenizer file .*tokenizer.json: Expecting property name"),
        ("[1, 2]", "corrupt tokenizer file .*tokenizer.json: expected a JSON object"),
        ('{"kind": "bpe"}', "unsupported tokenizer format_version None in .*tokenizer.json"),
        ('{"format_version": 1}', "corrupt tokenizer file .*tokenizer.json: missing string field 'kind'"),
        ('{"format_version": 1, "kind": "unigram"}', r"tokenizer.json: unknown tokenizer kind 'unigram'"),
    ],
)
def test_corrupt_metadata_names_the_file(tmp_path, content, message):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("vocab_size", "400", "field 'vocab_size' should be int"),
        ("vocab_size", True, "field 'vocab_size' should be int"),
        ("special_tokens", None, "field 'special_tokens' should be list"),
        ("special_tokens", ["a b"], "special token 'a b' contains whitespace"),
        ("files", {}, "files.(model|vocab) should be a file name"),
        ("files", {"model": "../x", "vocab": "../x"}, "files.(model|vocab) should be a file name"),
    ],
)
def test_bad_metadata_fields(request, kind, field, value, message, tmp_path):
    request.getfixturevalue(f"{kind}_tokenizer").save(tmp_path)
    path = tmp_path / "tokenizer.json"
    metadata = json.loads(path.read_text())
    metadata[field] = value
    path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=rf"^corrupt tokenizer file {path}: {message}"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
@pytest.mark.parametrize(
    "special_tokens, message",
    [
        (["<a>", ""], "special tokens must be non-empty strings"),
        (["<a b>"], "special token '<a b>' contains whitespace"),
        (["<a\nb>"], "contains whitespace"),
        (["<a\u2581b>"], "contains the reserved symbol U\\+2581"),
        (["<s>"], "special token '<s>' is reserved"),
        (["<unk>"], "special token '<unk>' is reserved"),
        (["<0x41>"], "collides with a byte-fallback token name"),
        (["<a>", "<b>", "<a>"], r"duplicate special tokens: \['<a>'\]"),
        (["<\ud800>"], "surrogate code point"),
    ],
)
def test_invalid_special_tokens(kind, corpus, special_tokens, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train_tokenizer(kind, corpus, vocab_size=400, special_tokens=special_tokens, out_dir=tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
def test_special_tokens_must_be_a_sequence_not_a_string(kind, corpus, tmp_path):
    with pytest.raises(TypeError, match="not a single str"):
        train_tokenizer(kind, corpus, vocab_size=400, special_tokens="<eot>", out_dir=tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
def test_training_text_with_surrogates_is_refused(kind, tmp_path):
    with pytest.raises(ValueError, match="text contains a surrogate code point at position 3"):
        train_tokenizer(kind, "abc\udc80" * 100, vocab_size=400, out_dir=tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "char", "bytebpe"])
def test_encode_requires_str(request, kind):
    tok = request.getfixturevalue(f"{kind}_tokenizer")
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        tok.encode(b"bytes")


def test_decode_rejects_non_integer_ids(bpe_tokenizer):
    with pytest.raises(ValueError, match="1-D sequence of integer ids"):
        bpe_tokenizer.decode([1.5, 2.0])
    with pytest.raises(ValueError, match="1-D sequence of integer ids"):
        bpe_tokenizer.decode([[1, 2]])
