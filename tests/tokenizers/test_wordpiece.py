"""BERT WordPiece on a hand-made vocabulary (the real MiniLM one is tested in tests/interop)."""

from __future__ import annotations

import json

import pytest

from lmlab.tokenizers import WordPieceTokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers.wordpiece import normalize

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cafe", "un", "##aff", "##able", "##ed",
         "play", "##ing", ",", "!", "$", "中", "国", "a", "##b", "naive", "x", "##x"]


def make(**options) -> WordPieceTokenizer:
    return WordPieceTokenizer(VOCAB, **options)


def pieces(tok, text):
    return [tok.id_to_token(i) for i in tok.encode(text)]


def test_special_ids_come_from_the_vocabulary():
    tok = make()
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == len(VOCAB)


def test_normalizer_cleans_lowercases_strips_accents_and_spaces_out_cjk():
    assert normalize("Café\tNAÏVE\x00\u200b!") == "cafe naive!"
    assert normalize("中国x") == " 中  国 x"
    assert normalize("Ünïcode", lowercase=False, strip_accents=False) == "Ünïcode"
    assert normalize("a\u00a0b\u3000c\r\nd") == "a b c  d"  # Unicode spaces become spaces


def test_greedy_longest_match_first_with_continuations():
    tok = make()
    assert pieces(tok, "unaffable") == ["un", "##aff", "##able"]
    assert pieces(tok, "The PLAYING, cafe!") == ["the", "play", "##ing", ",", "cafe", "!"]
    assert pieces(tok, "$a") == ["$", "a"]          # ASCII symbols split like punctuation
    assert pieces(tok, "abb") == ["a", "##b", "##b"]
    assert pieces(tok, "Café naïve 中国") == ["cafe", "naive", "中", "国"]


def test_unknown_and_overlong_words_become_unk():
    tok = make()
    assert pieces(tok, "the zebra") == ["the", "[UNK]"]  # no piece matches from "z"
    assert pieces(tok, "unzz") == ["[UNK]"]               # a word is all known pieces or [UNK]
    assert pieces(tok, "x" * 100) == ["x"] + ["##x"] * 99
    assert pieces(tok, "x" * 101) == ["[UNK]"]


def test_special_tokens_in_text_are_single_ids():
    tok = make()
    assert tok.encode("[CLS] the [MASK]!") == [2, 5, 4, 14]
    assert pieces(tok, "[cls]") == ["[UNK]", "[UNK]", "[UNK]"]  # matched before lower-casing only


def test_decode_is_lossy_but_readable():
    tok = make()
    ids = [tok.bos_id] + tok.encode("The UNAFFABLE cafe!") + [tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "the unaffable cafe !"


def test_token_byte_lengths_leave_out_the_continuation_prefix():
    tok = make()
    lengths = tok.token_byte_lengths()
    assert lengths[VOCAB.index("##able")] == 4 and lengths[VOCAB.index("中")] == 3
    assert lengths[tok.bos_id] == lengths[tok.pad_id] == 0 and lengths[tok.unk_id] == len("[UNK]")


def test_save_and_load_round_trip(tmp_path):
    tok = make(lowercase=True, strip_accents=False)
    tok.save(tmp_path / "tok")
    metadata = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert metadata["kind"] == "wordpiece" and metadata["strip_accents"] is False
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, WordPieceTokenizer)
    assert loaded.vocab == VOCAB and loaded.encode("Café unaffable") == tok.encode("Café unaffable")


def test_vocabulary_without_special_tokens_is_refused():
    with pytest.raises(ValueError, match=r"lacks the special tokens \[CLS\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]", "[MASK]", "a"])


def test_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pretrained only"):
        train_tokenizer("wordpiece", "some text", vocab_size=300, out_dir=tmp_path)


# Expected values below were checked against HF `tokenizers` 0.23.3 (BertNormalizer, lowercase=True),
# the tokenizer sentence-transformers runs for MiniLM.

def test_lowercasing_is_per_character_without_final_sigma():
    # str.lower() turns a word-final capital sigma into "ς"; HF lower-cases each character alone ("σ").
    assert normalize("ΟΔΟΣ ΣΑΣ") == "οδοσ σασ"
    tok = WordPieceTokenizer([*VOCAB, "σ", "ς", "##σ", "##ς", "ο", "##δ", "##ο"])
    assert pieces(tok, "ΟΔΟΣ") == ["ο", "##δ", "##ο", "##σ"]


def test_unassigned_code_points_are_kept_like_hf():
    # HF's control filter keeps unassigned (Cn) code points, so the word becomes [UNK], not "xx".
    assert normalize("x\u0378x") == "x\u0378x"
    assert pieces(make(), "x\u0378x") == ["[UNK]"]


def test_cjk_ranges_match_hf():
    # HF's sixth ideograph range starts at U+2B920 (not U+2B820 as in Google's BERT).
    assert normalize("a\U0002B820b") == "a\U0002B820b"
    assert normalize("a\U0002B91Fb") == "a\U0002B91Fb"
    assert normalize("a\U0002B920b") == "a \U0002B920 b"
    assert normalize("a\U0002B81Fb") == "a \U0002B81F b"
