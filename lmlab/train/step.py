"""The pure, jitted train step, the same for every task (lmlab.tasks).

State is a plain pytree {"params", "opt_state", "step", "rng"}; the model is rebuilt from its
graphdef inside the trace, so jit sees arrays only (cheaper per call than nnx.jit).

Several optimizer steps run per call (`lax.scan`), with batches sampled on device by the task from
its training arrays: on CPU per-call dispatch otherwise dominates a small model's step. Batch i of
step s is drawn from fold_in(data_key, s * grad_accum + i), so the data position is a function of
the step and resuming at a step reproduces the same batches.

On a device mesh (lmlab.parallel) the chunk is jitted with the state's shardings in and out, the
training arrays replicated, and each sampled batch constrained to be split over the batch mesh
axes, so a device (and a process) gathers only its own rows of the global batch; GSPMD
partitions the rest.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

DATA_STREAM, DROPOUT_STREAM = 0, 1


def make_loss_fn(graphdef, task) -> Callable:
    """loss_fn(params, batch, dropout_key) -> (objective, (nll, n_targets)) for
    jax.value_and_grad(has_aux=True)."""
    def loss_fn(params, batch, dropout_key):
        objective, nll, n_targets = task.loss(nnx.merge(graphdef, nnx.State(params)), batch, dropout_key)
        return objective, (nll, n_targets)

    return loss_fn


def make_train_chunk(graphdef, tx: optax.GradientTransformation, config, n_steps: int,
                     schedule: optax.Schedule, task, *, mesh=None, state_shardings=None) -> Callable:
    """Returns jitted chunk(state, train_arrays) -> (state, {"loss", "nll", "grad_norm", "lr"} of [n_steps]).

    With `mesh` and `state_shardings` (lmlab.parallel.shardings_of(state)), the state keeps those
    shardings, the training arrays and metrics are replicated and batches are split over the
    batch axes; without, jit picks (one device).
    """
    from lmlab import parallel

    train = config.train
    loss_fn = make_loss_fn(graphdef, task)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    use_dropout = config.model.dropout > 0
    accum = train.grad_accum

    def one_step(state, train_arrays):
        params, step = state["params"], state["step"]
        data_key = jax.random.fold_in(state["rng"], DATA_STREAM)
        dropout_base = jax.random.fold_in(state["rng"], DROPOUT_STREAM)

        def micro(i):
            position = step * accum + i
            batch = parallel.shard_batch(task.sample_batch(train_arrays, jax.random.fold_in(data_key, position)), mesh)
            dkey = jax.random.fold_in(dropout_base, position) if use_dropout else None
            return grad_fn(params, batch, dkey)

        if accum == 1:
            (loss, (nll, _)), grads = micro(0)
        else:
            # Micro-batches can score different numbers of targets (padding, MLM selections): each
            # mean is weighted by its count, so the step is the mean over all targets of the
            # accumulated batch, as one big batch would give.
            def body(carry, i):
                (loss, (nll, n)), grads = micro(i)
                weighted = jax.tree.map(lambda x: n * x, (loss, nll, grads))
                return (carry[0] + n, jax.tree.map(jnp.add, carry[1], weighted)), None

            zeros = (jnp.zeros(()), (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params)))
            (n_total, sums), _ = jax.lax.scan(body, zeros, jnp.arange(accum))
            loss, nll, grads = jax.tree.map(lambda x: x / jnp.maximum(n_total, 1.0), sums)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        new_state = {"params": params, "opt_state": opt_state, "step": step + 1, "rng": state["rng"]}
        return new_state, {"loss": loss, "nll": nll, "grad_norm": grad_norm, "lr": schedule(step)}

    def chunk(state, train_arrays):
        with parallel.activate(mesh):  # activation sharding constraints while tracing (none on one device)
            return jax.lax.scan(lambda s, _: one_step(s, train_arrays), state, None, length=n_steps)

    if state_shardings is None:
        return jax.jit(chunk, donate_argnums=0)
    rep = parallel.replicated(mesh)
    return jax.jit(chunk, in_shardings=(state_shardings, rep), out_shardings=(state_shardings, rep),
                   donate_argnums=0)
