"""Tokenizers: characters against BPE with 512, 2,048 (the main job's) and 8,192 tokens.

    lmlab experiment experiments/tokenizers.py [--scale tiny]

The main job's model and budget (2,900 steps of 8 x 128 tokens) with each tokenizer, measured in
held-out bits per byte, the unit that does not depend on the tokenizer. Equal steps, not equal wall
time: the trainer has no time budget, and its step time hardly depends on the tokenizer here (the
same 128-token windows; only the embedding and output layers grow with the vocabulary; the JSON
holds every run's parameter count). A 128-token window holds more text the larger the vocabulary,
so a BPE model sees more bytes per step and a longer context in bytes than the character model.
"""

from lmlab.experiment import TINY, Experiment, Size
from lmlab.experiment import plots


def bpe(vocab_size: int) -> dict:
    return {"tokenizer.kind": "bpe", "tokenizer.vocab_size": vocab_size}


EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Equal steps (2,900), not equal wall time: the trainer has no time budget. Anchor: none direct at
this size; Kudo and Richardson 2018 and the GPT-2 paper motivate subwords (shorter sequences, an
open vocabulary). Expect BPE ahead of characters in bits per byte at equal steps, as it sees
more text, and the largest vocabulary to suffer from rare tokens on a 1 MB corpus.""",
    base="configs/gpt_shakespeare.py",
    variants=[
        ("bpe-2048", bpe(2048)),
        ("char", {"tokenizer.kind": "char"}),
        ("bpe-512", bpe(512)),
        ("bpe-8192", bpe(8192)),
    ],
    seeds=2,
    tiny=TINY,  # characters; the BPE variants set their kind, with vocabularies the tiny corpus can fill
    tiny_variants={"bpe-2048": bpe(1024), "bpe-512": bpe(512), "bpe-8192": bpe(2048)},
    measures=[Size()],
    table=("val_bpb", "params"),
    plot=plots.per_variant(("val_bpb", "params")),
)
