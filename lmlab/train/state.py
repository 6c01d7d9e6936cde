"""The train state pytree: {"params", "opt_state", "step", "rng"} built from a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab.models import build_model
from lmlab.train.optimizer import make_optimizer


def init_state(config, vocab_size: int):
    """Returns (model, graphdef, optimizer, state); params in the state are a plain nested dict."""
    model = build_model(config.model, vocab_size, seed=config.seed)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = make_optimizer(config.train)
    train_state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
                   "rng": jax.random.key_data(jax.random.key(config.seed))}
    return model, graphdef, tx, train_state
