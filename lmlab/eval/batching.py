"""Held-out evaluation, data-parallel on the mesh the parameters live on.

Held-out batches are built on the host from data every process holds and put split over the batch
axes (`put_batch`), each process supplying its devices' rows; an evaluation step runs jitted on
that mesh and returns sums over the global batch (`data_parallel_eval`, `eval_sums`), so every
process gets the same metrics. The last batch is filled with zero rows (one compiled shape).
"""


from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from lmlab.eval import progress
from lmlab import sharding

# ------------------------------------------------------------------------- held-out evaluation
#
# Evaluation batches come from host arrays (the held-out split, the same in every process), not
# from on-device sampling, so they are put onto the mesh explicitly: split on their leading axis
# over the batch axes like training batches, each device computing only its own rows, with the
# per-batch sums reduced over the whole global batch and returned replicated.

def batch_split(mesh: Mesh | None) -> int:
    """Into how many parts the batch axes split a batch's rows (1 without a multi-device mesh)."""
    if mesh is None:
        return 1
    return math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)


def eval_batch_size(batch_size: int, mesh: Mesh | None) -> int:
    """`batch_size` rounded up to a multiple of batch_split(mesh), so every batch splits evenly."""
    n = batch_split(mesh)
    return -(-max(batch_size, 1) // n) * n


def eval_batches(arrays: Sequence[np.ndarray], batch_size: int, mesh: Mesh | None):
    """Yields tuples of host row slices of `arrays` (same row count), eval_batch_size(batch_size,
    mesh) rows each: the last batch is filled with all-zero rows (one compiled shape), so a task
    whose padding must score nothing gives it weight 0 where the zeros land (a zero weight column,
    pad-id targets). No rows give one all-zero batch, so sums over them are zeros, not nothing."""
    bs = eval_batch_size(batch_size, mesh)
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    pad = (-n) % bs if n else bs
    if pad:
        arrays = [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in arrays]
    for i in range(0, n + pad, bs):
        yield tuple(a[i:i + bs] for a in arrays)


def eval_sums(step, params, arrays: Sequence[np.ndarray], batch_size: int) -> tuple[float, ...]:
    """Runs step(params, *batch) -> tuple of sums over `eval_batches` of `arrays` on the mesh the
    parameters live on, and returns each sum over all batches (as Python floats, added in batch
    order). Every batch is dispatched before the first result is fetched, so they run back to
    back; fetching them in order drives the progress bar (lmlab.eval.progress) as they finish."""
    outputs = [step(params, *batch) for batch in eval_batches(arrays, batch_size, sharding.mesh_of(params))]
    totals = [0.0] * (len(outputs[0]) if outputs else 0)
    for output in progress.track(outputs, total=len(outputs)):
        totals = [total + float(value) for total, value in zip(totals, jax.device_get(output))]
    return tuple(totals)


def batch_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """An array of a batch (rows first) split over the batch axes by the logical rules."""
    return NamedSharding(mesh, sharding.logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh))


def put_batch(batch, mesh: Mesh | None):
    """Host arrays of one global batch -> global arrays split on their rows over the batch axes.

    Every process holds the same whole batch (held-out data is prepared identically everywhere)
    and contributes the rows of its own devices (`put`), as a training batch is gathered row by row
    on the devices that own it. Rows must be a multiple of batch_split(mesh) (`eval_batches`).
    Without a multi-device mesh the batch is returned unchanged.
    """
    if mesh is None or mesh.size == 1:
        return batch
    n = batch_split(mesh)

    def one(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(f"a batch of {x.shape[0] if x.ndim else 0} rows does not split over the batch "
                             f"axes ({n} ways); pad it to a multiple (lmlab.eval.batching.eval_batches)")
        return sharding.put(x, batch_sharding(x.shape, mesh))

    return jax.tree.map(one, batch)


def data_parallel_eval(fn):
    """fn(params, *batch) -> sums (a pytree of scalars) as a jitted step(params, *host_batch) that
    runs data-parallel on the mesh the parameters live on (`mesh_of`).

    The batch is put split over the batch axes (`put_batch`), fn is traced with that mesh active
    (`constrain` keeps activations split as in training) and its sums come back replicated: every
    process reads the same totals of the whole global batch. With parameters on one device it is
    plain jax.jit(fn). One compiled program per mesh.
    """
    jitted: dict = {}

    def step(params, *batch):
        mesh = sharding.mesh_of(params)
        if mesh not in jitted:
            if mesh is None:
                jitted[mesh] = jax.jit(fn)
            else:
                def on_mesh(p, *b, _mesh=mesh):
                    with sharding.activate(_mesh):
                        return fn(p, *sharding.shard_batch(b, _mesh))

                jitted[mesh] = jax.jit(on_mesh, out_shardings=sharding.replicated(mesh))
        return jitted[mesh](params, *put_batch(batch, mesh))

    return step
