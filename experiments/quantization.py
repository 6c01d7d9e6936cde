"""Quantization: one float32 main-job run per seed, then bfloat16, int8 and int4 (groups 32, 64,
128) weights made from it by `lmlab quantize`, and quantization-aware training (QAT) int4 from it.

    lmlab experiment experiments/quantization.py [--scale tiny]

Only `float32` and `qat` train; the others are derived runs (`lmlab quantize FLOAT_RUN ... --out`),
evaluated and measured like any run: held-out bits per byte, weight bytes (int4 packed two per
byte, scales included; token embeddings and output head int8 per row, the default policy) and
greedy decoding tokens/s at batch 1. `qat` trains 300 more steps from the float32 run with fake
int4 g64 weights (learning rate 5e-4, as in docs/benchmarks.md); `qat-int4` is it quantized. QAT
thus has 300 steps more than the post-training rows: docs/benchmarks.md compares it with 300 float
steps quantized after training.

`bfloat16` rounds every parameter to bfloat16 and stores it so (`lmlab quantize --weights
bfloat16`), still computing in float32: it measures the rounding alone. SmolLM2-135M rows need
the imported model (not in CI): they are in docs/benchmarks.md.
"""

from lmlab.experiment import TINY, DecodeSpeed, Derive, Experiment, WeightBytes
from lmlab.experiment import plots


def quantized(source: str, *args: str) -> Derive:
    return Derive(source, ["quantize", *args])


EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchor: post-training quantization loses far more at small scale than at 7B (Frantar et al. 2023,
GPTQ, OPT-125M WikiText-2 perplexity: float 27.65, round-to-nearest int4 37.28, GPTQ 31.12; at 7B
int4 g128 costs a few percent). Here the rounding is round-to-nearest with groups, on 1.3M
parameters.""",
    base="configs/gpt_shakespeare.py",
    variants=[
        ("float32", {}),
        ("bfloat16", quantized("float32", "--weights", "bfloat16")),
        ("int8", quantized("float32", "--weights", "int8")),
        ("int4-g32", quantized("float32", "--weights", "int4", "--group", "32")),
        ("int4-g64", quantized("float32", "--weights", "int4", "--group", "64")),
        ("int4-g128", quantized("float32", "--weights", "int4", "--group", "128")),
        ("qat", {"train.init_from": "{float32}", "quant.qat": "int4", "quant.group": 64, "train.steps": 300,
                 "train.learning_rate": 5e-4, "train.warmup_steps": 20}),
        ("qat-int4", quantized("qat", "--weights", "int4")),  # the group comes from the run
    ],
    seeds=2,
    tiny=TINY,
    tiny_variants={"qat": {"train.steps": 20, "train.warmup_steps": 2}},
    measures=[WeightBytes(), DecodeSpeed(batches=(1,))],
    table=("val_bpb", "weight_bytes", "decode_tok_s@b1"),
    plot=plots.per_variant(("val_bpb", "weight_bytes")),
)
