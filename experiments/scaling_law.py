"""Scaling law: seven GPT sizes from ~1.6e5 to ~1.6e7 parameters at one token budget.

    lmlab experiment experiments/scaling_law.py [--scale tiny]

Every size trains on the main job's budget (2,900 steps x 8 x 128 = 3.0M tokens) with its
recipe (RMSNorm, SwiGLU, RoPE, 2,048-token BPE, untied embeddings, lr 2.5e-3, not re-tuned per
size). L(N) = E + A * N^-alpha is fitted by least squares to held-out bits per byte against
non-embedding parameters (Kaplan et al.'s N); the JSON also holds every run's total count.
"""

from lmlab.experiment import TINY, Experiment, Size
from lmlab.experiment import plots
from lmlab.experiment.fit import scaling_law_analysis


def size(n_layers: int, d_model: int, n_heads: int) -> dict:
    """A Llama-style block shape: head dim d/n_heads, SwiGLU hidden ~8/3 d (a multiple of 8)."""
    return {"model.n_layers": n_layers, "model.d_model": d_model, "model.n_heads": n_heads,
            "model.n_kv_heads": n_heads, "model.d_ff": 8 * round(d_model * 8 / 3 / 8)}


SIZES = [("L2-d32", size(2, 32, 2)), ("L2-d64", size(2, 64, 2)), ("L3-d96", size(3, 96, 3)),
         ("L4-d128", size(4, 128, 4)), ("L6-d192", size(6, 192, 6)), ("L8-d256", size(8, 256, 8)),
         ("L8-d384", size(8, 384, 12))]
TINY_SIZES = [size(1, 8, 2), size(1, 16, 2), size(1, 24, 2), size(1, 32, 2), size(2, 48, 2), size(2, 64, 2), size(2, 96, 2)]

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0],
    base="configs/gpt_shakespeare.py",
    variants=SIZES,
    seeds=2,
    tiny=TINY,
    tiny_variants={name: tiny for (name, _), tiny in zip(SIZES, TINY_SIZES)},
    tiny_seeds=1,
    measures=[Size()],
    table=("val_bpb", "params", "params_non_embedding"),
    plot=plots.scaling_law(x="params_non_embedding", y="val_bpb"),
    analyze=scaling_law_analysis(x="params_non_embedding", y="val_bpb"),
)
