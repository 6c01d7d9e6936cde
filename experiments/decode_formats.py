"""Decode tokens/s of several run directories (e.g. one model's float32, int8 and int4 runs), interleaved.

    PYTHONPATH=. python experiments/decode_formats.py RUN [RUN ...] [--batch-sizes 1,8] [--new-tokens 64]
                                                      [--rounds 5]

Separate `lmlab bench decode` processes varied up to 2x between passes of the same run on a shared
CPU, so here every run is loaded and compiled once in one process and the runs' `generate` calls
alternate, round after round (what `bench decode` times: greedy with the KV cache, a random prompt,
prefill included). Each figure is the median over rounds of generated tokens per second. Prints one
JSON object: {run: {batch: tokens/s}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from lmlab.decode.sampling import generate
from lmlab.runs import load_run

PROMPT_LEN = 16


def timed_call(run, prompt_BT, new_tokens: int) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(generate(run.model, prompt_BT, max_new_tokens=new_tokens, key=jax.random.key(0),
                                   temperature=0.0))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    runs = {path: load_run(path) for path in args.runs}
    vocab = min(r.tokenizer.vocab_size for r in runs.values())
    prompts = {b: jax.random.randint(jax.random.key(b), (b, PROMPT_LEN), 0, vocab, jnp.int32) for b in batches}
    for run in runs.values():  # compile every shape first
        for b in batches:
            timed_call(run, prompts[b], args.new_tokens)
    seconds = {(path, b): [] for path in runs for b in batches}
    for _ in range(args.rounds):
        for b in batches:
            for path, run in runs.items():
                seconds[path, b].append(timed_call(run, prompts[b], args.new_tokens))
    result = {path: {b: round(b * args.new_tokens / statistics.median(seconds[path, b]), 1) for b in batches}
              for path in runs}
    print(json.dumps({"new_tokens": args.new_tokens, "prompt_len": PROMPT_LEN, "rounds": args.rounds,
                      "device_kind": jax.devices()[0].device_kind, "tokens_per_sec": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
