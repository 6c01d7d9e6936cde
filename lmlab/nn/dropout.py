"""Inverted dropout driven by explicit keys: no key means deterministic (evaluation, decoding).

A train step passes one `dropout_key` down the model; each module splits it for its parts, so the
step stays a pure function of its inputs and a resumed run draws the same masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# LoRA dropout keys are folded out of a module's key with this constant: fold_in leaves the keys
# that `split` gives the module's own dropout as they were, so adding adapters changes no mask.
ADAPTER_FOLD = 0x10BA


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Zeros a `rate` share of x and scales the rest by 1 / (1 - rate), so the mean is kept."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def split_key(key: jax.Array | None, n: int) -> list:
    """n independent keys from `key`, or n Nones without one."""
    return list(jax.random.split(key, n)) if key is not None else [None] * n


def adapter_keys(key: jax.Array | None, n: int) -> list:
    """n keys for the LoRA dropout of a module's dense layers (see ADAPTER_FOLD), or n Nones."""
    return split_key(None if key is None else jax.random.fold_in(key, ADAPTER_FOLD), n)
