"""Byte-level BPE on hand-made vocabularies (the real SmolLM2 one is tested in tests/interop)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.tokenizers import ByteLevelBpeTokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers.bytelevel import GPT2_PATTERN, PRETOKENIZERS, bytes_to_unicode, token_text_to_bytes

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BYTE_CHARS = [bytes_to_unicode()[b] for b in range(256)]


def make_tokenizer(merges=("Ġ t", "h e", "Ġt he", "i n", "Ġ a", "a a", "aa a"), pretokenizer="gpt-2",
                   drop_bytes=()):
    byte_tokens = [c for b, c in enumerate(BYTE_CHARS) if b not in drop_bytes]
    merged = ["".join(m.split(" ")) for m in merges]
    tokens = [*SPECIALS, *byte_tokens, *merged]
    return ByteLevelBpeTokenizer(tokens, list(merges), pretokenizer=PRETOKENIZERS[pretokenizer],
                                 special_tokens=SPECIALS, bos_id=1, eos_id=2, pad_id=0,
                                 chat_template="{{ messages }}")


def pieces(tok, text):
    return [tok.id_to_token(i) for i in tok.encode(text)]


def test_byte_map_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert token_text_to_bytes("ĠhelloĊ") == b" hello\n"


def test_merges_apply_in_rank_order():
    tok = make_tokenizer()
    assert pieces(tok, "the") == ["t", "he"]          # "t he" is not a merge; "Ġt he" is
    assert pieces(tok, " the") == ["Ġthe"]            # Ġ t (rank 0), then Ġt he
    assert pieces(tok, " in a") == ["Ġ", "in", "Ġa"]
    # "a a" (rank 5) joins every pair left to right first: aa aa a; then "aa a" (rank 6): aa aaa.
    assert pieces(tok, "aaaaa") == ["aa", "aaa"]


def test_gpt2_pretokenization():
    tok = make_tokenizer()
    assert tok.pretokenize("Hello world's  end\n\n x") == ["Hello", " world", "'s", " ", " end", "\n\n", " x"]
    assert tok.pretokenize("a 123 b") == ["a", " 123", " b"]


def test_smollm_pretokenizer_isolates_digits_first():
    tok = make_tokenizer(pretokenizer="smollm")
    # Each digit alone; the GPT-2 regex then runs inside each stretch between digits.
    assert tok.pretokenize("a 123 b") == ["a", " ", "1", "2", "3", " b"]
    assert tok.pretokenize("x  42") == ["x", "  ", "4", "2"]


def test_special_tokens_are_single_ids_anywhere():
    tok = make_tokenizer()
    ids = tok.encode("x<|im_start|>user\n<|im_end|><|endoftext|>")
    assert ids[1] == 1 and ids[-2:] == [2, 0]
    assert tok.decode(ids) == "x<|im_start|>user\n<|im_end|><|endoftext|>"  # specials decode to their text


def test_bytes_missing_from_the_vocabulary_are_dropped():
    tok = make_tokenizer(drop_bytes=(0x04,))
    assert tok.decode(tok.encode("a\x04b")) == "ab"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_decode_inverts_encode(text):
    tok = _full_tokenizer()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_pieces_cover_the_text(text):
    tok = _full_tokenizer()
    assert "".join(tok.pretokenize(text)) == text


_CACHED = {}


def _full_tokenizer():
    if "tok" not in _CACHED:
        _CACHED["tok"] = make_tokenizer(pretokenizer="smollm")
    return _CACHED["tok"]


def test_token_byte_lengths_match_decoding():
    tok = make_tokenizer()
    lengths = tok.token_byte_lengths()
    text = "the cat in aaa <|im_end|> é€😀"
    ids = tok.encode(text)
    assert lengths[ids].sum() == len(text.encode("utf-8"))
    assert lengths[tok.eos_id] == len("<|im_end|>")


def test_save_and_load_round_trip(tmp_path):
    tok = make_tokenizer(pretokenizer="smollm")
    tok.save(tmp_path / "tok")
    metadata = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert metadata["kind"] == "bytelevel_bpe" and metadata["bos_id"] == 1
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, ByteLevelBpeTokenizer)
    text = "the 12 cats <|im_end|> in aaaa"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.chat_template == "{{ messages }}" and loaded.pretokenizer == tok.pretokenizer


def test_corrupt_model_file_is_reported(tmp_path):
    make_tokenizer().save(tmp_path)
    (tmp_path / "bytelevel_bpe.json").write_text('{"tokens": ["a"], "merges": ["a b"]}')
    with pytest.raises(ValueError, match=r"corrupt tokenizer file .*bytelevel_bpe.json"):
        load_tokenizer(tmp_path)


def test_bad_merges_and_specials_are_refused():
    with pytest.raises(ValueError, match="names a token missing"):
        ByteLevelBpeTokenizer(BYTE_CHARS, ["a b"], pretokenizer=(GPT2_PATTERN,), bos_id=0, eos_id=0, pad_id=0)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ByteLevelBpeTokenizer(BYTE_CHARS, [], pretokenizer=(GPT2_PATTERN,), special_tokens=["<x>"],
                              bos_id=0, eos_id=0, pad_id=0)


def test_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pretrained only"):
        train_tokenizer("bytelevel_bpe", "some text", vocab_size=300, out_dir=tmp_path)


def _naive_encode(tok, merges, text):
    """GPT-2's reference algorithm on strings: regex pieces, then merge the best-ranked pair everywhere."""
    import regex

    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    ids = []
    for chunk in regex.split(r"(\p{N})", text):
        for piece in regex.findall(GPT2_PATTERN, chunk):
            word = [BYTE_CHARS[b] for b in piece.encode("utf-8")]
            while len(word) > 1:
                best = min(zip(word, word[1:]), key=lambda p: ranks.get(p, float("inf")))
                if best not in ranks:
                    break
                out, i = [], 0
                while i < len(word):
                    if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                        out.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        out.append(word[i])
                        i += 1
                word = out
            ids.extend(tok.token_to_id(w) for w in word)
    return ids


_REF_MERGES = ("Ġ t", "h e", "Ġt he", "e e", "ee e", "t h", "th e", "e h", "Ġ Ġ", "ĠĠ Ġ", "' s", "Ġ 1")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="eht 1\n's", max_size=24))
def test_encode_matches_naive_reference_bpe(text):
    tok = make_tokenizer(merges=_REF_MERGES, pretokenizer="smollm")
    assert tok.encode(text) == _naive_encode(tok, _REF_MERGES, text)


@pytest.mark.parametrize("merge", [1, None, ["Ġ", "t"]])
def test_non_string_merge_in_model_file_is_a_corrupt_file_error(tmp_path, merge):
    # Old code: AttributeError ('int' object has no attribute 'partition') escaped load_tokenizer.
    make_tokenizer().save(tmp_path)
    model = json.loads((tmp_path / "bytelevel_bpe.json").read_text(encoding="utf-8"))
    model["merges"][1] = merge
    (tmp_path / "bytelevel_bpe.json").write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(ValueError, match=r"corrupt tokenizer file .*bytelevel_bpe.json: merge 1 .* is not 'left right'"):
        load_tokenizer(tmp_path)
