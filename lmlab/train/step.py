"""The pure, jitted train step, the same for every task (lmlab.tasks).

State is a plain pytree {"params", "opt_state", "step", "rng"}; the model (and any frozen model a
task reads, lmlab.train.frozen) is rebuilt from its graphdef inside the trace, so jit sees arrays
only (cheaper per call than nnx.jit). The task's loss (lmlab.tasks.base.LossOutput) returns named
metrics besides the objective; the chunk returns them per step next to loss, grad norm and lr.

Several optimizer steps run per call (`lax.scan`), with batches sampled on device by the task from
its training arrays: on CPU per-call dispatch otherwise dominates a small model's step. Batch i of
step s is drawn from fold_in(data_key, s * grad_accum + i), so the data position is a function of
the step and resuming at a step reproduces the same batches. With `host_batches` (data.loader
host, lmlab.data.host_loader) the chunk reads the call's batches instead, stacked
[n_steps, grad_accum, batch, ...]: the scan runs over them, as many steps per call as before.

On a device mesh (lmlab.sharding) the chunk is jitted with the state's shardings in and out, the
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

from lmlab import sharding
from lmlab.train.state import BASE, trained_model, uses_dropout

DATA_STREAM, DROPOUT_STREAM = 0, 1


# Names the trainer itself logs; a task's metrics must not reuse them.
TRAINER_METRICS = ("loss", "grad_norm", "lr", "tokens_per_sec")


def batch_key(rng: jax.Array, position) -> jax.Array:
    """The key the task samples the micro-batch at data `position` (step * grad_accum + i) from, in a
    run whose state holds `rng` (lmlab.train.state.initial_rng): an offline distillation cache
    (lmlab.compress.distill_cache) redraws the same windows with it."""
    return jax.random.fold_in(jax.random.fold_in(rng, DATA_STREAM), position)


def make_loss_fn(graphdef, task, frozen_graphdefs: dict | None = None) -> Callable:
    """loss_fn(params, batch, dropout_key, frozen_params) -> (objective, (n_targets, metrics)) for
    jax.value_and_grad(has_aux=True); frozen models are rebuilt from their graphdefs in the trace,
    and a LoRA run's frozen base weights join the trained adapters (lmlab.train.state.BASE)."""
    frozen_graphdefs = {name: g for name, g in (frozen_graphdefs or {}).items() if name != BASE}

    def loss_fn(params, batch, dropout_key, frozen_params):
        frozen = {name: nnx.merge(g, nnx.State(frozen_params[name])) for name, g in frozen_graphdefs.items()}
        out = task.loss(trained_model(graphdef, params, frozen_params), batch, dropout_key, frozen)
        clash = set(out.metrics) & set(TRAINER_METRICS)
        if clash:
            raise ValueError(f"task metric(s) {sorted(clash)} would overwrite the trainer's own")
        return out.objective, (out.n_targets, out.metrics)

    return loss_fn


def make_train_chunk(graphdef, tx: optax.GradientTransformation, config, n_steps: int,
                     schedule: optax.Schedule, task, *, mesh=None, state_shardings=None,
                     frozen_graphdefs: dict | None = None, frozen_shardings=None,
                     host_batches: bool = False) -> Callable:
    """Returns jitted chunk(state, train_arrays, frozen_params) -> (state, metrics of [n_steps]):
    "loss", "grad_norm", "lr" and each of the task's named metrics. With `host_batches`, the
    second argument is the call's batches, [n_steps, grad_accum, batch, ...], split on the batch
    axis (lmlab.sharding.stacked_batch_sharding), instead of the arrays batches are drawn from.

    `frozen_params` ({name: parameter tree}, lmlab.train.frozen) enter as an argument, never
    donated or differentiated. With `mesh` and `state_shardings` (lmlab.sharding.shardings_of(state)),
    the state keeps those shardings, frozen parameters keep `frozen_shardings`, the training arrays
    and metrics are replicated and batches are split over the batch axes; without, jit picks.
    """

    train = config.train
    loss_fn = make_loss_fn(graphdef, task, frozen_graphdefs)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    use_dropout = uses_dropout(config)
    accum = train.grad_accum

    def one_step(state, draw_batch, frozen_params):
        """draw_batch(i, key): micro-batch i of this step; key is its data key (device sampling)."""
        params, step = state["params"], state["step"]
        dropout_base = jax.random.fold_in(state["rng"], DROPOUT_STREAM)

        def micro(i):
            position = step * accum + i
            batch = sharding.shard_batch(draw_batch(i, batch_key(state["rng"], position)), mesh)
            dkey = jax.random.fold_in(dropout_base, position) if use_dropout else None
            (objective, (n, metrics)), grads = grad_fn(params, batch, dkey, frozen_params)
            return n, (objective, metrics, grads)

        if accum == 1:
            _, (loss, metrics, grads) = micro(0)
        else:
            # Micro-batches can score different numbers of targets (padding, MLM selections): each
            # mean is weighted by its count, so the step is the mean over all targets of the
            # accumulated batch, as one big batch would give.
            def body(carry, i):
                n, values = micro(i)
                return (carry[0] + n, jax.tree.map(lambda total, x: total + n * x, carry[1], values)), None

            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(micro, 0))
            (n_total, sums), _ = jax.lax.scan(body, zeros, jnp.arange(accum))
            loss, metrics, grads = jax.tree.map(lambda x: x / jnp.maximum(n_total, 1.0), sums)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        new_state = {**state, "params": params, "opt_state": opt_state, "step": step + 1}
        return new_state, {"loss": loss, "grad_norm": grad_norm, "lr": schedule(step), **metrics}

    def chunk(state, inputs, frozen_params):
        with sharding.activate(mesh):  # activation sharding constraints while tracing (none on one device)
            if host_batches:  # one step's micro-batches per scan iteration
                return jax.lax.scan(lambda s, batches: one_step(s, lambda i, _key: batches[i], frozen_params),
                                    state, inputs)
            draw = lambda _i, key: task.sample_batch(inputs, key)  # noqa: E731
            return jax.lax.scan(lambda s, _: one_step(s, draw, frozen_params), state, None, length=n_steps)

    if state_shardings is None:
        return jax.jit(chunk, donate_argnums=0)
    rep = sharding.replicated(mesh)
    inputs_in = sharding.stacked_batch_sharding(mesh) if host_batches else rep
    frozen_in = frozen_shardings if frozen_shardings is not None else {}
    return jax.jit(chunk, in_shardings=(state_shardings, inputs_in, frozen_in), out_shardings=(state_shardings, rep),
                   donate_argnums=0)
