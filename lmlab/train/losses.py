"""Token-level losses as pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, *, label_smoothing: float = 0.0,
                        z_loss: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Returns (objective_BT, nll_BT).

    nll is the plain negative log-likelihood (what perplexity and bits per byte measure); the
    objective adds label smoothing (mix the one-hot target with the uniform distribution, as
    optax.smooth_labels does) and z-loss (z_loss * logsumexp^2, PaLM) for training.
    """
    logits = logits_BTV.astype(jnp.float32)
    lse_BT = jax.nn.logsumexp(logits, axis=-1)
    target_logit_BT = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
    nll_BT = lse_BT - target_logit_BT
    objective_BT = nll_BT
    if label_smoothing:
        # Cross-entropy against the uniform distribution is lse - mean(logits).
        uniform_BT = lse_BT - logits.mean(axis=-1)
        objective_BT = (1.0 - label_smoothing) * nll_BT + label_smoothing * uniform_BT
    if z_loss:
        objective_BT = objective_BT + z_loss * jnp.square(lse_BT)
    return objective_BT, nll_BT

