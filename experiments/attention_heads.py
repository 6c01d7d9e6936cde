"""Attention heads: MHA, GQA with 4 and 2 key/value groups, MQA, at equal d_model (128, 8 heads).

    lmlab experiment experiments/attention_heads.py [--scale tiny]

Quality (held-out bits per byte), size (parameters; fewer key/value heads shrink the K and V
projections), KV-cache bytes per token, and greedy decoding tokens/s with the KV cache at
batch 1 and 32, on the main job's budget.
"""

from lmlab.experiment import TINY, DecodeSpeed, Experiment, Size
from lmlab.experiment import plots

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchor: Ainslie et al. 2023 (GQA), Table 1, uptrained T5-XXL: MHA 47.2 average score at 1.51 s
per sample, GQA-8 47.1 at 0.28 s, MQA 46.6 at 0.24 s: GQA keeps MHA's quality at close to MQA's
speed. Here the models are trained from scratch and tiny, so decoding speed is dominated by
per-step overheads rather than KV-cache reads.""",
    base="configs/gpt_shakespeare.py",
    common={"model.n_heads": 8},
    variants=[
        ("mha", {"model.n_kv_heads": 8}),
        ("gqa4", {"model.n_kv_heads": 4}),
        ("gqa2", {"model.n_kv_heads": 2}),
        ("mqa", {"model.n_kv_heads": 1}),
    ],
    seeds=3,
    tiny={**TINY, "model.n_heads": 8},
    measures=[Size(), DecodeSpeed(batches=(1, 32))],
    table=("val_bpb", "params", "kv_bytes_per_token", "decode_tok_s@b1", "decode_tok_s@b32"),
    plot=plots.per_variant(("val_bpb", "params", "kv_bytes_per_token", "decode_tok_s@b1", "decode_tok_s@b32")),
)
