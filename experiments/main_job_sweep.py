"""Hyperparameter sweep behind the defaults of configs/gpt_shakespeare.py.

Quality at a fixed number of steps does not depend on the machine, so the sweep can run anywhere
(it was run on a GPU to save time; see experiments/main_job_sweep.md). Each variant is a list of
--config overrides on top of configs/base.py (the GPT-2-style starting point: batch 16, LayerNorm,
GELU, tied embeddings, lr 3e-3, warmup 50); the result is the full held-out val_bpb.

    python experiments/main_job_sweep.py [--only NAME ...] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time

from lmlab import config as config_lib
from lmlab.train.loop import train

SR = ["train.learning_rate=6e-3", "train.warmup_steps=100", "model.mlp=swiglu", "model.d_ff=344",
      "model.norm=rmsnorm"]
U8 = [*SR, "model.tie_embeddings=false", "data.batch_size=8", "train.steps=2900"]
VARIANTS = {
    "base": [],
    "lr6e-3": ["train.learning_rate=6e-3"],
    "lr1e-2": ["train.learning_rate=1e-2"],
    "lr6e-3_b2.95": ["train.learning_rate=6e-3", "train.b2=0.95"],
    "lr6e-3_min0": ["train.learning_rate=6e-3", "train.min_lr_ratio=0.0"],
    "lr6e-3_drop0.1": ["train.learning_rate=6e-3", "model.dropout=0.1"],
    "lr6e-3_wd0": ["train.learning_rate=6e-3", "train.weight_decay=0.0"],
    "lr6e-3_swiglu_rms": ["train.learning_rate=6e-3", "model.mlp=swiglu", "model.d_ff=344", "model.norm=rmsnorm"],
    "lr6e-3_b32_half": ["train.learning_rate=6e-3", "data.batch_size=32", "train.steps=650"],
    "lr6e-3_T256_b8": ["train.learning_rate=6e-3", "data.seq_len=256", "data.batch_size=8"],
    "lr6e-3_warm100": ["train.learning_rate=6e-3", "train.warmup_steps=100"],
    "lr6e-3_vocab1024": ["train.learning_rate=6e-3", "tokenizer.vocab_size=1024"],
    "lr6e-3_untied": ["train.learning_rate=6e-3", "model.tie_embeddings=false"],
    # Round 2: how quality scales with steps, and combinations of the round-1 winners.
    "base_2000": ["train.steps=2000"],
    "base_2600": ["train.steps=2600"],
    "base_3900": ["train.steps=3900"],
    "lr4e-3_warm100": ["train.learning_rate=4e-3", "train.warmup_steps=100"],
    "swiglu_rms_warm100": ["train.learning_rate=6e-3", "train.warmup_steps=100", "model.mlp=swiglu",
                           "model.d_ff=344", "model.norm=rmsnorm"],
    "swiglu_rms_warm100_v1024": ["train.learning_rate=6e-3", "train.warmup_steps=100", "model.mlp=swiglu",
                                 "model.d_ff=344", "model.norm=rmsnorm", "tokenizer.vocab_size=1024"],
    "rms_warm100": ["train.learning_rate=6e-3", "train.warmup_steps=100", "model.norm=rmsnorm"],
    "warm100_T64_b32": ["train.learning_rate=6e-3", "train.warmup_steps=100", "data.seq_len=64", "data.batch_size=32"],
    # Round 3: smaller batches (more updates per token) on the SwiGLU + RMSNorm + warmup-100 recipe.
    "sr_1700": [*SR, "train.steps=1700"],
    "sr_b8_2600": [*SR, "data.batch_size=8", "train.steps=2600"],
    "sr_b8_2600_lr3e-3": [*SR, "data.batch_size=8", "train.steps=2600", "train.learning_rate=3e-3"],
    "sr_b8_2600_warm200": [*SR, "data.batch_size=8", "train.steps=2600", "train.warmup_steps=200"],
    "sr_b12_1740": [*SR, "data.batch_size=12", "train.steps=1740"],
    "sr_T64_b16_2600": [*SR, "data.seq_len=64", "train.steps=2600"],
    "sr_untied": [*SR, "model.tie_embeddings=false"],
    "sr_v1024_b8_2600": [*SR, "tokenizer.vocab_size=1024", "data.batch_size=8", "train.steps=2600"],
    # Round 4: batch 8, untied, at the ~2,900 steps a 2-core CPU runs in five minutes.
    "u_b8_2900_lr3e-3": [*U8, "train.learning_rate=3e-3"],
    "u_b8_2900_lr2e-3": [*U8, "train.learning_rate=2e-3"],
    "u_b8_2900_lr4e-3": [*U8, "train.learning_rate=4e-3"],
    "u_b8_2900_lr3e-3_warm200": [*U8, "train.learning_rate=3e-3", "train.warmup_steps=200"],
    "u_b8_2900_lr3e-3_min.03": [*U8, "train.learning_rate=3e-3", "train.min_lr_ratio=0.03"],
    "u_b8_2900_lr3e-3_b2.999": [*U8, "train.learning_rate=3e-3", "train.b2=0.999"],
    "u_b8_2900_lr3e-3_wd.05": [*U8, "train.learning_rate=3e-3", "train.weight_decay=0.05"],
    "u_b8_2900_lr3e-3_gelu_ln": ["train.warmup_steps=100", "model.tie_embeddings=false", "data.batch_size=8",
                                 "train.steps=2900", "train.learning_rate=3e-3"],
    # Round 5: longer warmup.
    "u_b8_2900_lr2e-3_warm200": [*U8, "train.learning_rate=2e-3", "train.warmup_steps=200"],
    "u_b8_2900_lr2.5e-3_warm200": [*U8, "train.learning_rate=2.5e-3", "train.warmup_steps=200"],
    "u_b8_2900_lr3e-3_warm300": [*U8, "train.learning_rate=3e-3", "train.warmup_steps=300"],
    "u_b8_2900_lr3e-3_warm200_seed1": [*U8, "train.learning_rate=3e-3", "train.warmup_steps=200", "seed=1"],
}
BASE_CONFIG = "configs/base.py"  # GPT-2-style defaults: the sweep's starting point
COMMON = ["train.steps=1300", "train.eval_every=100", "train.checkpoint_every=100000"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every variant")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        config = config_lib.load(BASE_CONFIG, COMMON + args.extra + overrides)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as run_dir:
            summary = train(config, run_dir, progress=False)
        row = {"variant": name, "overrides": overrides, "val_bpb": round(summary["val_bpb"], 4),
               "val_loss": round(summary["val_loss"], 4), "steps": config.train.steps, "seconds": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
