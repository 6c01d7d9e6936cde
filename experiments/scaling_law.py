"""Scaling law: seven GPT sizes from ~1.6e5 to ~1.6e7 parameters, six of them at three token budgets.

    lmlab experiment experiments/scaling_law.py [--scale tiny]

Every size trains on the main job's budget (2,900 steps x 8 x 128 = 3.0M tokens) with its
recipe (RMSNorm, SwiGLU, RoPE, 2,048-token BPE, untied embeddings, lr 2.5e-3, not re-tuned per
size); all but the largest also on 1,440 and 720 steps (1.5M and 0.74M tokens), each its own run
with its own cosine schedule (Hoffmann et al.'s approach 3). L(N) = E + A * N^-alpha is fitted by
least squares at the 3.0M budget, and L(N, D) = E + A * N^-alpha + B * D^-beta over every run, to
held-out bits per byte against non-embedding parameters (Kaplan et al.'s N); the JSON also holds
every run's total count.
"""

from lmlab.experiment import TINY, Experiment, Size, TrainTokens
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
# Smaller budgets (steps, name suffix), listed after the 3.0M runs; tiny scale: 10 and 5 of its 20 steps.
BUDGETS = [(1440, "D1.5M", 10), (720, "D0.74M", 5)]
TINY_BY_NAME = {name: tiny for (name, _), tiny in zip(SIZES, TINY_SIZES)}
SHORTER = [(f"{name}-{suffix}", {**shape, "train.steps": steps}, {**TINY_BY_NAME[name], "train.steps": tiny_steps})
           for steps, suffix, tiny_steps in BUDGETS for name, shape in SIZES[:-1]]

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0],
    base="configs/gpt_shakespeare.py",
    variants=SIZES + [(name, shape) for name, shape, _ in SHORTER],
    seeds=2,
    tiny=TINY,
    tiny_variants=TINY_BY_NAME | {name: tiny for name, _, tiny in SHORTER},
    tiny_seeds=1,
    measures=[Size(), TrainTokens()],
    table=("val_bpb", "params", "params_non_embedding", "train_tokens"),
    plot=plots.scaling_law(x="params_non_embedding", y="val_bpb", d="train_tokens"),
    analyze=scaling_law_analysis(x="params_non_embedding", y="val_bpb", d="train_tokens"),
)
