"""Tokenizers: characters against BPE with 512, 2,048 (the main job's) and 8,192 tokens.

    lmlab experiment experiments/tokenizers.py [--scale tiny]

The main job's model and budget (2,900 steps of 8 x 128 tokens) with each tokenizer, measured in
held-out bits per byte, the unit that does not depend on the tokenizer; then each other tokenizer
again at the main job's wall time (`-time` rows). A 128-token window holds more text the larger the
vocabulary, so a BPE model sees more bytes per step and a longer context in bytes than the
character model, while the embedding and output layers (and so the step time) grow with the
vocabulary; the JSON holds every run's parameter count.

Equal wall time is set as equal steps x step time: the trainer has no clock budget (a run stopped
by the clock would end off its cosine schedule and depend on the machine's load). The steps come
from the equal-step runs' median training throughput on one pinned core of the 2-core VM
(metrics.jsonl, 2 seeds each, 2026-12-03): characters 18,847 tokens/s, BPE 512 16,118, BPE 2,048
14,421, BPE 8,192 9,638; so 2,900 x each / 14,421 steps, rounded to a multiple of 20.
"""

from lmlab.experiment import TINY, Experiment, Size, TrainTokens
from lmlab.experiment import plots


def bpe(vocab_size: int) -> dict:
    return {"tokenizer.kind": "bpe", "tokenizer.vocab_size": vocab_size}


CHAR = {"tokenizer.kind": "char"}
TOKENS_PER_SEC = {"char": 18847, "bpe-512": 16118, "bpe-2048": 14421, "bpe-8192": 9638}  # see the docstring


def at_main_job_time(name: str) -> int:
    """Steps that take as long as the main job's 2,900 at BPE 2,048, at this tokenizer's speed."""
    return 20 * round(2900 * TOKENS_PER_SEC[name] / TOKENS_PER_SEC["bpe-2048"] / 20)


EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Equal steps (2,900), then equal wall time (the `-time` rows: steps scaled by each tokenizer's
measured throughput, see experiments/tokenizers.py). Anchor: none direct at this size; Kudo and
Richardson 2018 and the GPT-2 paper motivate subwords (shorter sequences, an open vocabulary).
Expect BPE ahead of characters in bits per byte at equal steps, as it sees more text, and the
largest vocabulary to suffer from rare tokens on a 1 MB corpus.""",
    base="configs/gpt_shakespeare.py",
    variants=[
        ("bpe-2048", bpe(2048)),
        ("char", CHAR),
        ("bpe-512", bpe(512)),
        ("bpe-8192", bpe(8192)),
        ("char-time", {**CHAR, "train.steps": at_main_job_time("char")}),
        ("bpe-512-time", {**bpe(512), "train.steps": at_main_job_time("bpe-512")}),
        ("bpe-8192-time", {**bpe(8192), "train.steps": at_main_job_time("bpe-8192")}),
    ],
    seeds=2,
    tiny=TINY,  # characters; the BPE variants set their kind, with vocabularies the tiny corpus can fill
    tiny_variants={"bpe-2048": bpe(1024), "bpe-512": bpe(512), "bpe-8192": bpe(2048),
                   "char-time": {"train.steps": 20}, "bpe-512-time": {**bpe(512), "train.steps": 20},
                   "bpe-8192-time": {**bpe(2048), "train.steps": 20}},
    measures=[Size(), TrainTokens()],
    table=("val_bpb", "params", "train_tokens"),
    plot=plots.per_variant(("val_bpb", "params")),
)
