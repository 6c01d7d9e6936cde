"""sentencepiece BPE specifics: vocabulary layout, digits, U+2581, chunked encoding, training limits."""

from __future__ import annotations

import io
import random
import time

import pytest
import sentencepiece

from lmlab.tokenizers import BpeTokenizer, load_tokenizer, train_tokenizer
from lmlab.tokenizers import spm as spm_module

META_SYMBOL_BYTES = "\u2581".encode("utf-8")  # b"\xe2\x96\x81"


def _byte_id(tokenizer: BpeTokenizer, value: int) -> int:
    return tokenizer._processor.piece_to_id(f"<0x{value:02X}>")


def test_vocabulary_layout(bpe_tokenizer, special_tokens):
    tok = bpe_tokenizer
    assert tok.kind == "bpe"
    assert tok.vocab_size == 400
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.special_ids == {"<|endoftext|>": 4, "<sep>": 5}  # right after unk (3)
    lengths = tok.token_byte_lengths()
    assert lengths[3] == 0  # unk: byte fallback means encode never produces it
    byte_ids = [_byte_id(tok, value) for value in range(256)]
    assert sorted(set(byte_ids)) == byte_ids and len(byte_ids) == 256
    assert (lengths[byte_ids] == 1).all()
    assert [tok.decode([i]).encode("utf-8") for i in byte_ids[:128]] == [bytes([v]) for v in range(128)]


def test_bpe_learned_merges_from_the_corpus(bpe_tokenizer, corpus):
    ids = bpe_tokenizer.encode(corpus)
    # Characters per token on the training text; a char tokenizer scores 1.0.
    assert len(corpus) / len(ids) > 1.5
    assert len(bpe_tokenizer.encode(" the")) == 1


@pytest.mark.parametrize("text", ["0123456789", "In 1599, 42 kings", "x2024y", "99 bottles\n100"])
def test_digits_are_split_one_per_token(bpe_tokenizer, text):
    ids = bpe_tokenizer.encode(text)
    pieces = [bpe_tokenizer.decode([i]) for i in ids]
    for piece in pieces:
        assert not (any(c.isdigit() for c in piece) and len(piece) > 1), pieces
    assert sum(c.isdigit() for c in text) == sum(p.isdigit() for p in pieces)


def test_literal_meta_symbol_is_byte_encoded_not_a_space(bpe_tokenizer):
    tok = bpe_tokenizer
    meta_ids = [_byte_id(tok, b) for b in META_SYMBOL_BYTES]
    assert tok.encode("\u2581") == meta_ids
    ids = tok.encode("good\u2581night")
    assert ids == tok.encode("good") + meta_ids + tok.encode("night")
    assert tok.decode(ids) == "good\u2581night"
    assert tok.decode(tok.encode("good night")) == "good night"


def test_whitespace_is_preserved_exactly(bpe_tokenizer):
    text = "  leading\n\n\ttabs   and    runs \n trailing  "
    assert bpe_tokenizer.decode(bpe_tokenizer.encode(text)) == text


def test_chunked_encoding_equals_whole_text_encoding(bpe_tokenizer, make_text, monkeypatch):
    # A text with special tokens and unseen characters, long enough for many chunks.
    text = make_text(300, seed=7).replace("KING:", "KING<|endoftext|>:").replace("Clown", "Clöwn 漢")
    whole = bpe_tokenizer._processor.encode(text)
    monkeypatch.setattr(spm_module, "ENCODE_CHUNK_CHARS", 100)
    assert len(spm_module._split_at_newlines(text, 100)) > 50
    assert bpe_tokenizer.encode(text) == whole


def test_split_at_newlines_covers_text_and_cuts_after_newlines():
    text = "ab\ncdef\n\ng\nhij"
    chunks = spm_module._split_at_newlines(text, 3)
    assert "".join(chunks) == text
    assert all(chunk.endswith("\n") for chunk in chunks[:-1])
    assert all(len(chunk) >= 3 for chunk in chunks[:-1])
    assert spm_module._split_at_newlines("no newline here", 3) == ["no newline here"]
    assert spm_module._split_at_newlines("", 3) == []


def test_training_sentences_cut_lines_meta_symbols_and_long_lines(monkeypatch):
    monkeypatch.setattr(spm_module, "TRAINING_SEGMENT_CHARS", 4)
    sentences = spm_module._training_sentences("ab\u2581cd\n\nabcdefghij\n")
    assert sentences == ["ab", "cd", "abcd", "efgh", "ij"]


def test_training_sentence_sampling_is_even_and_deterministic(monkeypatch):
    monkeypatch.setattr(spm_module, "MAX_TRAINING_SENTENCES", 5)
    text = "\n".join(f"line{i}" for i in range(20))
    assert spm_module._training_sentences(text) == ["line0", "line4", "line8", "line12", "line16"]


def test_single_long_line_is_still_learned_from(corpus, tmp_path):
    # sentencepiece drops sentences over max_sentence_length; one ~13 kB line
    # must be cut into segments rather than lost.
    one_line = corpus.replace("\n", " ")
    assert len(one_line.encode("utf-8")) > spm_module.TRAINING_SEGMENT_CHARS
    tok = train_tokenizer("bpe", one_line, vocab_size=400, out_dir=tmp_path)
    assert len(one_line) / len(tok.encode(one_line)) > 1.5
    assert tok.decode(tok.encode(one_line)) == one_line


def test_training_text_with_meta_symbols_and_rare_characters(tmp_path):
    text = "a\u2581b \u2581\u2581 c\n" * 50 + "漢字 ☃ \U0001f600\n" * 20 + "the king the king\n" * 50
    tok = train_tokenizer("bpe", text, vocab_size=285, out_dir=tmp_path)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("☃")) == 1  # every training character is a piece (coverage 1.0)


def test_vocab_too_small_for_fixed_ids(corpus, special_tokens, tmp_path):
    with pytest.raises(ValueError, match=r"^vocab_size 262 is too small for a BPE tokenizer: 262 ids go to"):
        train_tokenizer("bpe", corpus, vocab_size=262, special_tokens=special_tokens, out_dir=tmp_path)


def test_vocab_too_small_for_the_characters(corpus, tmp_path):
    # 260 fixed ids + ~60 distinct characters do not fit in 300.
    with pytest.raises(ValueError, match=r"^vocab_size 300 is too small for this text: it needs at least 3\d\d ids"):
        train_tokenizer("bpe", corpus, vocab_size=300, out_dir=tmp_path)


def test_vocab_too_large_for_the_text(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"^vocab_size 5000 is too large for this text: .* at most \d+ ids"):
        train_tokenizer("bpe", corpus, vocab_size=5000, out_dir=tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n\n"])
def test_empty_text_is_refused(text, tmp_path):
    with pytest.raises(ValueError, match="^cannot train a BPE tokenizer on empty text$"):
        train_tokenizer("bpe", text, vocab_size=400, out_dir=tmp_path)


def test_vocab_size_must_be_an_int(corpus, tmp_path):
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        train_tokenizer("bpe", corpus, vocab_size=400.0, out_dir=tmp_path)


def test_training_errors_are_one_line(corpus, tmp_path):
    for vocab_size in (300, 5000):
        with pytest.raises(ValueError) as info:
            train_tokenizer("bpe", corpus, vocab_size=vocab_size, out_dir=tmp_path)
        assert "\n" not in str(info.value) and "INTERNAL" not in str(info.value)


def _train_raw_model(corpus: str, **overrides) -> bytes:
    options = dict(spm_module._TRAINER_OPTIONS, vocab_size=400, num_threads=1)
    options.update(overrides)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.splitlines()), model_writer=model, **options
    )
    return model.getvalue()


def test_lossy_sentencepiece_models_are_refused(corpus):
    lossy = _train_raw_model(corpus, add_dummy_prefix=True, remove_extra_whitespaces=True)
    with pytest.raises(ValueError, match="does not round-trip text"):
        BpeTokenizer(lossy)


def test_models_without_byte_fallback_are_refused(corpus):
    with pytest.raises(ValueError, match="lacks byte-fallback tokens"):
        BpeTokenizer(_train_raw_model(corpus, byte_fallback=False))


def test_corrupt_model_file_names_the_file(bpe_tokenizer, tmp_path):
    bpe_tokenizer.save(tmp_path)
    model_path = tmp_path / spm_module.MODEL_FILE
    model_path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError, match=rf"^corrupt tokenizer file {model_path}: not a valid sentencepiece model") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_model_file_names_the_file(bpe_tokenizer, tmp_path):
    bpe_tokenizer.save(tmp_path)
    (tmp_path / spm_module.MODEL_FILE).unlink()
    with pytest.raises(ValueError, match=rf"^tokenizer file not found: {tmp_path / spm_module.MODEL_FILE}$"):
        load_tokenizer(tmp_path)


def test_special_token_missing_from_model_is_corrupt(bpe_tokenizer, tmp_path):
    bpe_tokenizer.save(tmp_path)
    metadata_path = tmp_path / "tokenizer.json"
    metadata_path.write_text(metadata_path.read_text().replace("<sep>", "<other>"))
    with pytest.raises(ValueError, match="no piece for special token '<other>'"):
        load_tokenizer(tmp_path)


def test_special_tokens_with_commas_and_quotes(corpus, tmp_path):
    # The sentencepiece wrapper passes symbol lists as CSV; quoting must survive.
    specials = ('a,"b', "<x,y>")
    tok = train_tokenizer("bpe", corpus, vocab_size=400, special_tokens=specials, out_dir=tmp_path)
    for token in specials:
        assert tok.encode(token) == [tok.special_ids[token]]
    assert load_tokenizer(tmp_path).special_ids == tok.special_ids


def _varied_play_text(num_bytes: int, seed: int = 0) -> str:
    """Play-format text over an open vocabulary of made-up words, so BPE has 2048 pieces to learn."""
    rng = random.Random(seed)
    syllables = "ba be bi bo ca ce co da de di do fa fe fi ga ge go ha he hi ho la le li lo ma me mi mo na ne ni no pa pe po ra re ri ro sa se si so ta te ti to va ve vi wa we wi th st ing ed".split()
    speakers = ["".join(rng.choices(syllables, k=2)).upper() for _ in range(60)]
    parts, size = [], 0
    while size < num_bytes:
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(rng.randint(3, 9))]
            lines.append(" ".join(words).capitalize() + rng.choice([",", ".", ";", "!", "?"]))
        block = f"{rng.choice(speakers)}:\n" + "\n".join(lines) + "\n\n"
        parts.append(block)
        size += len(block)
    return "".join(parts)


@pytest.mark.slow
def test_training_and_encoding_speed_on_megabytes(tmp_path):
    """~4.5 MB of play-format text: train vocab 2048, encode, decode (timings printed with -s)."""
    text = _varied_play_text(4_500_000)
    start = time.perf_counter()
    tok = train_tokenizer("bpe", text, vocab_size=2048, out_dir=tmp_path)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ids = tok.encode(text)
    encode_s = time.perf_counter() - start
    assert tok.decode(ids) == text
    assert ids == tok._processor.encode(text)  # chunked + threaded == whole text in one call
    print(f"bpe 2048 on {len(text.encode()) / 1e6:.1f} MB: train {train_s:.1f}s, encode {encode_s:.1f}s")
    assert train_s < 60 and encode_s < 20  # generous: shared machines are noisy
