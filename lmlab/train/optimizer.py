"""AdamW with linear warmup + cosine decay, global-norm clipping and a weight-decay mask."""

from __future__ import annotations

import jax
import optax


def make_schedule(train) -> optax.Schedule:
    """Linear warmup from 0 to learning_rate, then cosine decay to learning_rate * min_lr_ratio."""
    warmup = min(train.warmup_steps, train.steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train.learning_rate, warmup_steps=warmup,
        decay_steps=max(train.steps, warmup + 1), end_value=train.learning_rate * train.min_lr_ratio)


def decay_mask(params):
    """Weight decay only on the matrices of linear layers: not on norms, biases or embeddings."""
    def is_kernel(path, _):
        last = path[-1]
        return getattr(last, "key", getattr(last, "name", None)) == "kernel"

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(train) -> optax.GradientTransformation:
    parts = []
    if train.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(train.grad_clip))
    parts.append(optax.adamw(make_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                             weight_decay=train.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
