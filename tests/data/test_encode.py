"""Encoding documents on several processes gives the serial stream, id for id."""

import numpy as np

from lmlab.data import encode
from lmlab.tokenizers import train_tokenizer

DOCS = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 7 + 1) for i in range(40)]


def test_parallel_encoding_equals_the_serial_one(tmp_path, monkeypatch):
    tokenizer = train_tokenizer("bpe", "\n\n".join(DOCS), vocab_size=320, special_tokens=("<|endoftext|>",),
                                out_dir=tmp_path / "tok")
    naive = np.concatenate([np.asarray(tokenizer.encode(d) + [tokenizer.eos_id], np.int32) for d in DOCS])
    serial = encode.encode_docs(tokenizer, DOCS)
    monkeypatch.setattr(encode, "PARALLEL_MIN_CHARS", 0)  # workers even for this little text
    parallel = encode.encode_docs(tokenizer, DOCS, tokenizer_dir=tmp_path / "tok", workers=2)
    np.testing.assert_array_equal(serial, naive)
    np.testing.assert_array_equal(parallel, naive)
    assert encode.encode_docs(tokenizer, []).shape == (0,)
