"""Tokenization throughput of `lmlab prepare` (lmlab.data.encode) against sentencepiece's own batch encoder.

    PYTHONPATH=. python experiments/prepare_speed.py [--corpus python_stdlib] [--kind bpe] [--repeats 3]
                                                     [--vocab-size 2048] [--copies 1]

The tokenizer is the main job's (`tokenizer.kind=bpe`, sentencepiece BPE) or another kind (`bytebpe`:
lmlab's pure-Python byte-level BPE, no library batch encoder), trained here on the corpus's training
split; the documents are that split (`--copies N`: N times over, for a larger input). Timed, each the median of the repeats, wall clock:

  * lmlab_serial: `encode_docs(..., workers=1)`, one process (sentencepiece may still use its threads
    inside long documents, which lmlab's BpeTokenizer cuts at line breaks into 8 kB pieces);
  * lmlab_workers: `encode_docs(..., workers=N)`, N spawned processes, start-up included;
  * spm_batch_1 / spm_batch_N: `SentencePieceProcessor.encode(docs, num_threads=1 | N)`, the library's
    batch encoder on the same documents (raw: no end-of-text ids, no lmlab wrapper).

Prints one JSON object: characters, tokens, and per variant seconds, MB/s and MB/s per core used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from lmlab.data import get_corpus
from lmlab.data.encode import available_cores, encode_docs
from lmlab.tokenizers import train_tokenizer


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="python_stdlib")
    parser.add_argument("--kind", default="bpe", choices=("bpe", "bytebpe", "char"))
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    docs = list(get_corpus(args.corpus).train_docs)
    tokenizer_text = "\n\n".join(docs)
    docs = docs * args.copies
    n_bytes, cores = sum(len(d.encode()) for d in docs), available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(args.kind, tokenizer_text, vocab_size=args.vocab_size,
                                    special_tokens=("<|endoftext|>",), out_dir=tmp)
        variants = {
            "lmlab_serial": (1, lambda: len(encode_docs(tokenizer, docs, tokenizer_dir=tmp, workers=1))),
            "lmlab_workers": (cores, lambda: len(encode_docs(tokenizer, docs, tokenizer_dir=tmp, workers=cores))),
        }
        if args.kind == "bpe":
            processor = tokenizer._processor  # the sentencepiece object lmlab's BpeTokenizer wraps
            variants["spm_batch_1"] = (1, lambda: sum(map(len, processor.encode(docs, num_threads=1))))
            variants[f"spm_batch_{cores}"] = (cores, lambda: sum(map(len, processor.encode(docs, num_threads=cores))))
        result = {"corpus": args.corpus, "copies": args.copies, "kind": args.kind, "documents": len(docs), "bytes": n_bytes, "cores": cores}
        for name, (used, fn) in variants.items():
            seconds, n_tokens = _median_seconds(fn, args.repeats)
            result[name] = {"seconds": round(seconds, 3), "tokens": n_tokens, "MB_per_s": round(n_bytes / seconds / 1e6, 2),
                            "MB_per_s_per_core": round(n_bytes / seconds / 1e6 / used, 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
