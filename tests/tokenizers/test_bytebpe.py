"""lmlab's own byte-level BPE: encoding equals a naive reference, files, sizes, special tokens."""

from __future__ import annotations

import json

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import cli
from lmlab import config as config_lib
from lmlab.tokenizers import ByteBpeTokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers.bpe_trainer import merge_pair
from lmlab.tokenizers.bytelevel import GPT2_PATTERN

from .conftest import BPE_VOCAB_SIZE, SPECIAL_TOKENS


def naive_encode(tok: ByteBpeTokenizer, text: str) -> list[int]:
    """Split at special tokens, digits, then GPT-2's regex; apply every merge in rank order to each piece."""
    ids = []
    specials = "|".join(regex.escape(t) for t in sorted(tok.special_ids, key=len, reverse=True))
    for chunk in regex.split(f"({specials})", text):
        if chunk in tok.special_ids:
            ids.append(tok.special_ids[chunk])
            continue
        for part in regex.split(r"(\p{N})", chunk):
            for piece in regex.findall(GPT2_PATTERN, part):
                symbols = list(piece.encode("utf-8"))
                for rank, pair in enumerate(tok.merges):
                    symbols = merge_pair(symbols, pair, 256 + rank)
                ids.extend(tok.first_symbol_id + s for s in symbols)
    return ids


_FRAGMENTS = ["the", " the", " thou", "HAMLET:\n", "o'er", " 1999", "  ", "\n\n", "<sep>", "<|endoftext|>",
              "漢字", "\U0001f600", " king's", "\t", "é"]
corpus_like = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(alphabet="theking ',.:\n1o"), st.text()),
                       max_size=10).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=corpus_like)
def test_encode_equals_naive_reference(bytebpe_tokenizer, text):
    assert bytebpe_tokenizer.encode(text) == naive_encode(bytebpe_tokenizer, text)


def test_trained_to_exact_size_and_compresses_the_corpus(bytebpe_tokenizer, corpus):
    tok = bytebpe_tokenizer
    assert tok.vocab_size == BPE_VOCAB_SIZE
    assert len(tok.merges) == BPE_VOCAB_SIZE - 3 - len(SPECIAL_TOKENS) - 256
    assert len(tok.encode(" the")) == 1  # the commonest word of the corpus is one token
    assert len(corpus.encode()) / len(tok.encode(corpus)) > 2.0


def test_digits_are_split_and_merges_never_cross_pieces(bytebpe_tokenizer):
    tok = bytebpe_tokenizer
    assert len(tok.encode("1999")) == 4
    for data in tok.symbol_bytes[256:]:  # every merged token lies inside one pre-tokenized piece
        assert len(tok.pretokenize(data.decode("utf-8"))) == 1


def test_special_tokens_are_not_learned_from_text(tmp_path):
    text = "<eot>hello world " * 50
    tok = train_tokenizer("bytebpe", text, vocab_size=3 + 1 + 256 + 9, special_tokens=["<eot>"], out_dir=tmp_path)
    assert not any(b"eot" in data for data in tok.symbol_bytes)
    assert tok.encode("<eot>hello")[0] == tok.special_ids["<eot>"] == 3


def test_vocab_size_bounds(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least 260 .*got 259"):
        ByteBpeTokenizer.train("abc", vocab_size=259, special_tokens=["<x>"])
    with pytest.raises(ValueError, match="allows only 2 merges .*vocab_size at most 261, got 300"):
        ByteBpeTokenizer.train("abc", vocab_size=300)  # "ab", then "abc": one word, one token


def test_saved_merges_are_readable(bytebpe_tokenizer, tmp_path):
    bytebpe_tokenizer.save(tmp_path)
    lines = (tmp_path / "bytebpe.json").read_text(encoding="utf-8").splitlines()
    merges = json.loads("\n".join(lines))["merges"]
    assert len(lines) == len(merges) + 2  # one merge per line
    rank = bytebpe_tokenizer.encode(" the")[0] - bytebpe_tokenizer.first_symbol_id - 256
    assert merges[rank][2] == "Ġthe"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["merges"].__setitem__(0, [0, 999, "x"]), "merge 0 .* should be two symbols made before it"),
    (lambda m: m["merges"].__setitem__(1, m["merges"][0]), "merge 1 .* repeats merge 0"),
    (lambda m: m["merges"][0].__setitem__(2, "zz"), "merge 0 gives .* but the file says 'zz'"),
    (lambda m: m.__setitem__("merges", [[1, 2]]), "expected 'merges', a list of"),
    (lambda m: m["merges"].pop(), "gives vocab_size 399, but tokenizer.json says 400"),
])
def test_corrupt_model_file_is_one_line_error(bytebpe_tokenizer, tmp_path, edit, message):
    bytebpe_tokenizer.save(tmp_path)
    path = tmp_path / "bytebpe.json"
    model = json.loads(path.read_text(encoding="utf-8"))
    edit(model)
    path.write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^corrupt tokenizer file {path}: {message}"):
        load_tokenizer(tmp_path)


def test_cli_bpe_train_explains_each_merge(tmp_path, capsys):
    words = {"low": 5, "lowest": 2, "newer": 6, "wider": 3, "new": 2}
    (tmp_path / "a.txt").write_text(" ".join(w for w, n in words.items() for _ in range(n)), encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["bpe", "train", str(tmp_path / "a.txt"), "--vocab-size", "262", "--explain", "--out", str(out)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "merge 1: 'e' + 'r' -> 'er'  count 9 in 2 words: ' newer'×6 ' wider'×3"
    assert len(lines) == 4 and json.loads(lines[-1])["vocab_size"] == 262
    assert lines[1:3] == ["merge 2: ' ' + 'n' -> ' n'  count 8 in 2 words: ' newer'×6 ' new'×2",
                          "merge 3: 'e' + 'w' -> 'ew'  count 8 in 2 words: ' newer'×6 ' new'×2"]
    assert load_tokenizer(out).encode(" newer") == [260, 261, 259]  # " n" "ew" "er": merge k is id 3 + 256 + k


def test_cli_bpe_train_errors(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait")
    assert cli.main(["bpe", "train", str(path), "--vocab-size", "300", "--out", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err.strip() == f"lmlab: error: {path}: not UTF-8 text (byte 3: invalid continuation byte)"
    assert cli.main(["bpe", "train", str(path), "--vocab-size", "12", "--out", str(tmp_path / "t")]) == 2
    assert "need --vocab-size >= 259" in capsys.readouterr().err


def test_config_kind_trains_through_the_factory(tmp_path, corpus):
    config = config_lib.load("configs/gpt_shakespeare.py", ["--config.tokenizer.kind=bytebpe",
                                                             "--config.tokenizer.vocab_size=300"])
    tok = train_tokenizer(config.tokenizer.kind, corpus, vocab_size=config.tokenizer.vocab_size,
                          special_tokens=tuple(config.tokenizer.special_tokens), out_dir=tmp_path)
    assert isinstance(load_tokenizer(tmp_path), ByteBpeTokenizer) and tok.vocab_size == 300
    assert tok.special_ids == {"<|endoftext|>": 3}
