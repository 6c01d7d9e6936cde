"""Norms: RMSNorm (the main job's) against LayerNorm, pre-norm GPT at the main job's budget.

    lmlab experiment experiments/norms.py [--scale tiny]

lmlab's GPT is pre-norm only (post-norm exists for BERT), so this is the norm kind alone.
"""

from lmlab.experiment import TINY, Experiment, Size
from lmlab.experiment import plots

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchor: Zhang and Sennrich 2019 (RMSNorm) report quality on par with LayerNorm at 7-64% less
time per step in their implementations.""",
    base="configs/gpt_shakespeare.py",
    variants=[
        ("rmsnorm", {"model.norm": "rmsnorm"}),
        ("layernorm", {"model.norm": "layernorm"}),
    ],
    seeds=3,
    tiny=TINY,
    measures=[Size()],
    table=("val_bpb", "params"),
    plot=plots.bars(("val_bpb",)),
)
