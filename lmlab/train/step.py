"""The pure, jitted train and eval steps.

State is a plain pytree {"params", "opt_state", "step", "rng"}; the model is rebuilt from its
graphdef inside the trace, so jit sees arrays only (cheaper per call than nnx.jit).

Several optimizer steps run per call (`lax.scan`), with batches sampled on device from the token
array: on CPU per-call dispatch otherwise dominates a small model's step. Batch i of step s is
drawn from fold_in(data_key, s * grad_accum + i), so the data position is a function of the step
and resuming at a step reproduces the same batches.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lmlab.train.losses import token_cross_entropy

DATA_STREAM, DROPOUT_STREAM = 0, 1


def sample_windows(tokens_N: jax.Array, key: jax.Array, batch: int, seq_len: int) -> jax.Array:
    """[batch, seq_len + 1] windows at uniform random offsets (inputs and shifted targets)."""
    starts_B = jax.random.randint(key, (batch,), 0, tokens_N.shape[0] - seq_len)
    return tokens_N[starts_B[:, None] + jnp.arange(seq_len + 1)].astype(jnp.int32)


def make_loss_fn(graphdef, train_config) -> Callable:
    def loss_fn(params, windows_BT1, dropout_key):
        model = nnx.merge(graphdef, nnx.State(params))
        logits_BTV, _ = model(windows_BT1[:, :-1], dropout_key=dropout_key)
        objective_BT, nll_BT = token_cross_entropy(
            logits_BTV, windows_BT1[:, 1:], label_smoothing=train_config.label_smoothing,
            z_loss=train_config.z_loss)
        return objective_BT.mean(), nll_BT.mean()

    return loss_fn


def make_train_chunk(graphdef, tx: optax.GradientTransformation, config, n_steps: int,
                     schedule: optax.Schedule) -> Callable:
    """Returns jitted chunk(state, tokens_N) -> (state, {"loss", "nll", "grad_norm", "lr"} of [n_steps])."""
    train, data = config.train, config.data
    loss_fn = make_loss_fn(graphdef, train)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    use_dropout = config.model.dropout > 0
    accum = train.grad_accum

    def one_step(state, tokens_N):
        params, step = state["params"], state["step"]
        data_key = jax.random.fold_in(state["rng"], DATA_STREAM)
        dropout_base = jax.random.fold_in(state["rng"], DROPOUT_STREAM)

        def micro(i):
            position = step * accum + i
            windows = sample_windows(tokens_N, jax.random.fold_in(data_key, position), data.batch_size, data.seq_len)
            dkey = jax.random.fold_in(dropout_base, position) if use_dropout else None
            return grad_fn(params, windows, dkey)

        if accum == 1:
            (loss, nll), grads = micro(0)
        else:
            def body(carry, i):
                (loss, nll), grads = micro(i)
                return jax.tree.map(jnp.add, carry, ((loss, nll), grads)), None

            zeros = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, params))
            total, _ = jax.lax.scan(body, zeros, jnp.arange(accum))
            (loss, nll), grads = jax.tree.map(lambda x: x / accum, total)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        new_state = {"params": params, "opt_state": opt_state, "step": step + 1, "rng": state["rng"]}
        return new_state, {"loss": loss, "nll": nll, "grad_norm": grad_norm, "lr": schedule(step)}

    def chunk(state, tokens_N):
        return jax.lax.scan(lambda s, _: one_step(s, tokens_N), state, None, length=n_steps)

    return jax.jit(chunk, donate_argnums=0)


def make_eval_step(graphdef) -> Callable:
    """Jitted eval(params, windows_BT1, weights_BT) -> summed nll of the weighted targets."""
    def eval_step(params, windows_BT1, weights_BT):
        model = nnx.merge(graphdef, nnx.State(params))
        logits_BTV, _ = model(windows_BT1[:, :-1])
        _, nll_BT = token_cross_entropy(logits_BTV, windows_BT1[:, 1:])
        return (nll_BT * weights_BT).sum()

    return jax.jit(eval_step)

