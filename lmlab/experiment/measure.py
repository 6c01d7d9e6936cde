"""Measurements taken on every finished run of an experiment.

Each measure is a small object with a `name` (its key in the run's measurements.json, so a rerun
takes only the ones missing) and `__call__(run) -> {metric: value}` on a `lmlab.runs.LoadedRun`.
A value of None means "does not apply" (e.g. learned positions past their table) and shows as n/a.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab.bench import median_seconds
from lmlab.decode.sampling import generate
from lmlab.eval.run import evaluate_run, max_eval_len

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class HeldOutBpb:
    """Held-out bits per byte in non-overlapping windows of `multiples` x the training length,
    as `bpb@LEN`; absolute positions are measured only up to their table (model.max_len)."""

    multiples: tuple[int, ...] = (1, 2, 4, 8)
    tokens_per_batch: int = 0  # 0: the training batch's; longer windows come in fewer rows

    @property
    def name(self) -> str:
        return "bpb_x" + "_".join(map(str, self.multiples))

    def __call__(self, run) -> dict:
        c = run.config
        tokens = self.tokens_per_batch or c.data.batch_size * c.data.seq_len
        limit = max_eval_len(c)
        out = {}
        for k in self.multiples:
            length = k * c.data.seq_len
            if limit is not None and length > limit:
                out[f"bpb@{length}"] = None
                continue
            result = evaluate_run(run, seq_len=length, batch_size=max(1, tokens // length))
            out[f"bpb@{length}"] = result["val_bpb"]
        return out


def kv_cache_bytes_per_token(model_config) -> int:
    """Keys and values of every layer for one token: 2 x layers x kv heads x head dim x bytes."""
    m = model_config
    return 2 * m.n_layers * m.n_kv_heads * (m.d_model // m.n_heads) * DTYPE_BYTES[m.dtype]


def embedding_params(model_config, vocab_size: int) -> int:
    """Token embedding (+ the untied output head) and a learned position table: what Kaplan et al.
    2020 leave out of N."""
    m = model_config
    n = vocab_size * m.d_model * (1 if m.tie_embeddings else 2)
    return n + (m.max_len * m.d_model if m.positions == "learned" else 0)


@dataclass(frozen=True)
class Size:
    """Parameters (all, and without embeddings) and KV-cache bytes per token."""

    name: str = "size"

    def __call__(self, run) -> dict:
        params = sum(int(x.size) for x in jax.tree.leaves(nnx.state(run.model, nnx.Param)))
        m = run.config.model
        return {"params": params, "params_non_embedding": params - embedding_params(m, run.tokenizer.vocab_size),
                "kv_bytes_per_token": kv_cache_bytes_per_token(m)}


@dataclass(frozen=True)
class TrainTokens:
    """Tokens the run trained on (D of a scaling law): steps x batch x sequence length x accumulation."""

    name: str = "budget"

    def __call__(self, run) -> dict:
        c = run.config
        return {"train_tokens": c.train.steps * c.data.batch_size * c.data.seq_len * c.train.grad_accum}


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of the model's weights as held and saved (`lmlab quantize`'s weight_bytes): int4 packed
    two per byte, with their scales, and the float norms. Not the checkpoint directory, which also
    holds a trained run's optimizer state."""

    name: str = "weights"

    def __call__(self, run) -> dict:
        return {"weight_bytes": sum(int(x.nbytes) for x in jax.tree.leaves(nnx.state(run.model)))}


@dataclass(frozen=True)
class DecodeSpeed:
    """Greedy decoding tokens/s with the KV cache at each batch size (`decode_tok_s@bN`): generated
    tokens per second of a whole generate call (prefill included), median of `repeats` after one
    that compiles. Random prompt ids: speed does not depend on them."""

    batches: tuple[int, ...] = (1, 32)
    new_tokens: int = 64
    prompt_len: int = 16
    repeats: int = 3

    @property
    def name(self) -> str:
        return "decode_b" + "_".join(map(str, self.batches))

    def __call__(self, run) -> dict:
        limit = max_eval_len(run.config)  # absolute positions: prompt + new tokens fit the table
        new_tokens = self.new_tokens if limit is None else min(self.new_tokens, limit - self.prompt_len)
        out = {}
        for batch in self.batches:
            prompt_BT = jax.random.randint(jax.random.key(batch), (batch, self.prompt_len), 0,
                                           run.tokenizer.vocab_size, jnp.int32)

            def call():
                return generate(run.model, prompt_BT, max_new_tokens=new_tokens, key=jax.random.key(0),
                                temperature=0.0)

            jax.block_until_ready(call())  # compiles
            out[f"decode_tok_s@b{batch}"] = batch * new_tokens / median_seconds(call, self.repeats)
        return out


def finite_or_none(value):
    """JSON has no NaN: a non-finite number is stored as None."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
