"""Norms: RMSNorm (the main job's) against LayerNorm, each pre-norm (the main job's) and post-norm.

    lmlab experiment experiments/norms.py [--scale tiny]

A 2 x 2 at the main job's shape and budget. Pre-norm: x + f(norm(x)) per sublayer and a final
norm (GPT-2, Llama); post-norm: norm(x + f(x)) per sublayer, no final norm (the original
Transformer, GPT-1), with the same learning rate and 200-step warmup (not re-tuned).
"""

from lmlab.experiment import TINY, Experiment, Size
from lmlab.experiment import plots

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchors: Zhang and Sennrich 2019 (RMSNorm) report quality on par with LayerNorm at 7-64% less
time per step in their implementations. Xiong et al. 2020 (On Layer Normalization in the
Transformer Architecture): post-norm needs a learning-rate warmup and is sensitive to its length;
pre-norm trains without one and converges faster.""",
    base="configs/gpt_shakespeare.py",
    variants=[
        ("rmsnorm", {"model.norm": "rmsnorm"}),
        ("layernorm", {"model.norm": "layernorm"}),
        ("rmsnorm-post", {"model.norm": "rmsnorm", "model.norm_position": "post"}),
        ("layernorm-post", {"model.norm": "layernorm", "model.norm_position": "post"}),
    ],
    seeds=3,
    tiny=TINY,
    measures=[Size()],
    table=("val_bpb", "params"),
    plot=plots.per_variant(("val_bpb",)),
)
