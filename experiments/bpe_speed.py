"""Training time of lmlab's own byte-level BPE vs sentencepiece BPE on the Shakespeare training plays.

    PYTHONPATH=. python experiments/bpe_speed.py [--vocab-size 8192] [--repeats 3]

Both train on the same text (the registered corpus's training split, ~4.3 MB) to the same number
of ids. Prints one JSON object: per tokenizer the best wall-clock and process CPU seconds of the
repeats (sentencepiece trains on several threads, so its CPU time exceeds its wall time), and the
bytes per token each gets on the held-out plays.
"""

from __future__ import annotations

import argparse
import json
import time

from lmlab.data import get_corpus
from lmlab.tokenizers import BpeTokenizer, ByteBpeTokenizer


def _timed(train, repeats: int):
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        tokenizer = train()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return tokenizer, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    corpus = get_corpus("shakespeare")
    held_out = corpus.val_text.encode("utf-8")
    result = {"train_bytes": len(corpus.train_text.encode("utf-8")), "vocab_size": args.vocab_size}
    for name, cls in (("bytebpe", ByteBpeTokenizer), ("sentencepiece_bpe", BpeTokenizer)):
        tokenizer, wall, cpu = _timed(lambda: cls.train(corpus.train_text, vocab_size=args.vocab_size), args.repeats)
        result[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                        "held_out_bytes_per_token": round(len(held_out) / len(tokenizer.encode(corpus.val_text)), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
