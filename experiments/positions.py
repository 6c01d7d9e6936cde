"""Positions: learned, sinusoidal, RoPE, ALiBi and none (NoPE) at the main job's shape and budget.

    lmlab experiment experiments/positions.py [--scale tiny]

Held-out bits per byte at the training length (128 tokens) and in windows of 2x, 4x and 8x it.
Learned positions get a table of exactly the training length (model.max_len = 128), so they are
measured only there; the others have max_len 1024 (sinusoidal's fixed table reaches it, RoPE,
ALiBi and NoPE have no table).
"""

from lmlab.experiment import TINY, Experiment, HeldOutBpb, Size
from lmlab.experiment import plots

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchor: Press et al. 2022 (ALiBi), Table 2, WikiText-103 trained at 512 tokens, perplexity at
512 / 1012 / 3512: sinusoidal 20.05 / 43.54 / 178.97, rotary 20.07 / 21.37 / 35.54, ALiBi
19.73 / 18.73 / 18.40 (247M parameters; here ~1.3M on Shakespeare, and bits per byte).""",
    base="configs/gpt_shakespeare.py",
    common={"model.max_len": 1024},
    variants=[
        ("rope", {"model.positions": "rope"}),
        ("learned", {"model.positions": "learned", "model.max_len": 128}),
        ("sinusoidal", {"model.positions": "sinusoidal"}),
        ("alibi", {"model.positions": "alibi"}),
        ("none", {"model.positions": "none"}),
    ],
    seeds=3,
    tiny={**TINY, "model.max_len": 256},
    tiny_variants={"learned": {"model.max_len": 32}},
    measures=[HeldOutBpb(multiples=(1, 2, 4, 8)), Size()],
    plot=plots.bpb_vs_length,
)
