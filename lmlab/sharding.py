"""Meshes and shardings: the only module of lmlab that knows how arrays lie on devices.

Mesh. Every run has one device mesh with three named axes, sized by the config's `mesh` section
(`mesh.data=-1` takes what the other two leave; lmlab.config.resolve_mesh checks the product):

    data     pure data parallelism: parameters replicated, batch split
    fsdp     fully sharded data parallelism: the batch is split over it too, and every parameter
             matrix and its optimizer moments are split along their `embed` dimension
    tensor   Megatron-style tensor parallelism: attention heads, the MLP hidden layer and the
             vocabulary split across devices

Logical axes. Parameters carry logical axis names in their nnx metadata (`logical_axes`, set by
lmlab.nn: Linear's `axes=(in, out)`, Embed's ("vocab", "embed"), norms' ("norm",)), and batches
are ("batch", ...). `RULES`, one table, maps those names to mesh axes; data, FSDP and tensor
parallelism all follow from it. A dimension that a mesh axis does not divide (a 65-character
vocabulary over tensor=2) stays whole on that axis: GSPMD computes the same numbers either way,
only the memory split differs. A parameter without logical axes (e.g. a module written without
them) is replicated.

Execution is `jax.jit` with NamedSharding in/out shardings (GSPMD, mesh axes of type Auto: the
model code has no sharding annotations of its own besides the batch constraint), never pmap.

Multi-host start-up is lmlab.distributed; held-out batches split over the mesh, lmlab.eval.batching.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lmlab import config as config_lib

log = logging.getLogger("lmlab")

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (or axes, tried in order), None = replicated. The single table every
# sharding in lmlab comes from.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),     # examples: data parallel and FSDP both split the batch
    ("length", None),          # sequence positions
    ("embed", "fsdp"),         # the model dimension of every parameter matrix: FSDP
    ("vocab", "tensor"),       # embedding rows / output-projection columns
    ("heads", "tensor"),       # query heads (attention output projection rows, q projections)
    ("kv_heads", "tensor"),    # key/value heads (separate k/v projections, e.g. cross-attention)
    # The fused q|k|v projection's columns, (N + 2K) * H of them. Split contiguously over tensor,
    # so a device's slice is not one set of whole heads: GSPMD reshuffles q, k and v between the
    # devices after the projection (an all-to-all of activations). The alternative, a head-grouped
    # column order, would change the parameter layout of every checkpoint and importer; the
    # numbers are identical either way, only communication differs.
    ("qkv", "tensor"),
    ("mlp", "tensor"),         # MLP hidden units
    ("norm", None),            # norm scales and biases: small, replicated
)

_warned: set = set()


# ----------------------------------------------------------------------------------------- mesh

def make_mesh(mesh_config=None, *, devices: Sequence | None = None) -> Mesh:
    """The ("data", "fsdp", "tensor") mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = config_lib.resolve_mesh(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def mesh_for_run(config, *, devices: Sequence | None = None) -> Mesh:
    """The run's configured mesh if it fits the devices here, else all of them on `data`.

    For evaluation and decoding, which may run on a machine other than the one that trained.
    """
    n = len(jax.devices() if devices is None else devices)
    try:
        return make_mesh(config.get("mesh"), devices=devices)
    except config_lib.ConfigError as e:
        log.info("%s; using mesh data=%d instead", e, n)
        return make_mesh(None, devices=devices)


def check_batch(config, mesh: Mesh) -> None:
    """The global batch must split evenly over the batch axes (and hence over processes)."""
    n = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if config.data.batch_size % n:
        raise config_lib.ConfigError(
            f"config key 'data.batch_size' ({config.data.batch_size}) must be divisible by "
            f"mesh.data x mesh.fsdp ({mesh.shape['data']} x {mesh.shape['fsdp']} = {n})")


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES) + f" ({jax.process_count()} process(es))"


# ------------------------------------------------------------------------------- logical -> spec

def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=RULES) -> P:
    """PartitionSpec for an array of `shape` whose dimensions have logical `names`.

    A mesh axis is used at most once per array (the first dimension that asks for it wins), size-1
    axes are left out, and an axis that does not divide its dimension is skipped.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {', '.join(table)}")
        axes = table[name]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        chosen: list[str] = []
        for axis in axes:
            n = mesh.shape[axis]
            if axis in used or n == 1:
                continue
            if size % (math.prod(mesh.shape[a] for a in chosen) * n):
                if (name, size, axis) not in _warned:
                    _warned.add((name, size, axis))
                    log.info("sharding: %s dimension of size %d is not divisible by mesh axis %s=%d; "
                             "kept whole on it", name, size, axis, n)
                continue
            chosen.append(axis)
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _is_variable(x) -> bool:
    from flax import nnx

    return isinstance(x, nnx.Variable)


def param_shardings(variables, mesh: Mesh) -> dict:
    """NamedSharding per parameter, as a plain dict shaped like `nnx.to_pure_dict(variables)`.

    `variables` is an nnx State (real or from nnx.eval_shape) whose Variables may carry
    `logical_axes` metadata; those without it are replicated.
    """
    from flax import nnx

    def one(var):
        value = var.get_value() if hasattr(var, "get_value") else var.value
        names = var.get_metadata().get("logical_axes")
        if names is None:
            return replicated(mesh)
        return NamedSharding(mesh, logical_to_spec(names, value.shape, mesh))

    return nnx.to_pure_dict(jax.tree.map(one, variables, is_leaf=_is_variable))


def logical_axes(variables) -> dict:
    """The `logical_axes` of every parameter (None where there are none), shaped like to_pure_dict."""
    from flax import nnx

    marked = jax.tree.map(lambda v: _Names(v.get_metadata().get("logical_axes")), variables, is_leaf=_is_variable)
    return jax.tree.map(lambda n: n.names, nnx.to_pure_dict(marked), is_leaf=lambda x: isinstance(x, _Names))


class _Names:  # a pytree leaf holding a tuple (tuples and None would be pytree nodes)
    def __init__(self, names):
        self.names = names


def train_state_shardings(variables, tx, mesh: Mesh) -> dict:
    """Shardings of the train state {"params", "opt_state", "step", "rng"}.

    Optimizer moments mirror their parameters (optax.tree_map_params finds the parameter-shaped
    parts of any optax state); counters, the step and the RNG key are replicated.
    """
    import optax
    from flax import nnx

    params = param_shardings(variables, mesh)
    abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(variables))
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    rep = replicated(mesh)
    opt = optax.tree_map_params(tx, lambda _, sharding: sharding, abstract_opt, params,
                                transform_non_params=lambda _: rep)
    return {"params": params, "opt_state": opt, "step": rep, "rng": rep}


def shardings_of(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


# --------------------------------------------------------------------------- activation constraints

_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("lmlab_active_mesh", default=None)


@contextlib.contextmanager
def activate(mesh: Mesh | None):
    """While a function is traced inside this context, `constrain` pins activations to the
    logical shardings on `mesh`; with no mesh or a one-device mesh it changes nothing."""
    token = _ACTIVE_MESH.set(mesh if mesh is not None and mesh.size > 1 else None)
    try:
        yield
    finally:
        _ACTIVE_MESH.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint to the logical axes `names` on the active mesh (see `activate`).

    lmlab.nn pins the outputs of its dense layers and embeddings as ("batch", ..., out_axis), so
    activations stay split over the batch axes and GSPMD gathers FSDP-sharded weights instead of
    resharding activations to match them.
    """
    mesh = _ACTIVE_MESH.get()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, x.shape, mesh)))


def map_shards(fn, *args, names: Sequence[Sequence[str | None]], out_names: Sequence[str | None]):
    """fn(*args) run per device on its shards when a mesh is active (`activate`), else fn(*args).

    For kernels XLA cannot partition (Pallas custom calls): under GSPMD they would be fed whole,
    gathered arrays on every device. `names` gives each arg's logical axes (`out_names` the
    result's), mapped to mesh axes by the rules. A logical axis is split the same way in every
    arg or in none (e.g. query and kv heads only together, so a shard's query heads still read
    its kv heads); a size-1 dimension is a broadcast and stays whole.
    """
    mesh = _ACTIVE_MESH.get()
    if mesh is None:
        return fn(*args)
    split: dict[str, Any] = {}
    for name in {n for arg_names in names for n in arg_names if n is not None}:
        choices = {logical_to_spec((name,), (x.shape[i],), mesh)
                   for x, arg_names in zip(args, names) for i, n in enumerate(arg_names)
                   if n == name and x.shape[i] > 1}
        only = choices.pop() if len(choices) == 1 else P()
        split[name] = only[0] if len(only) else None

    def spec(arg_names, shape):
        return P(*(split.get(n) if n is not None and size > 1 else None for n, size in zip(arg_names, shape)))

    if not any(split.values()):
        return fn(*args)
    in_specs = tuple(spec(n, x.shape) for n, x in zip(names, args))
    out_spec = P(*(split.get(n) if n is not None else None for n in out_names))
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_spec, check_vma=False)(*args)


# ----------------------------------------------------------------------------- arrays and batches

def shard_batch(batch, mesh: Mesh | None):
    """Constrains every array of a batch (inside jit) to be split on its leading axis over the
    batch mesh axes; a no-op without a mesh or with one device.

    The batch is drawn on device from one replicated key, so its row indices are the same in
    every process; with this constraint GSPMD partitions the gather that builds it, and each
    device materialises only its own rows of the global batch.
    """
    if mesh is None or mesh.size == 1:
        return batch
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    if not axes:
        return batch
    n = math.prod(mesh.shape[a] for a in axes)
    sharding = NamedSharding(mesh, P(axes))

    def one(x):
        if getattr(x, "ndim", 0) == 0 or x.shape[0] % n:
            return x
        return jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree.map(one, batch)


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
    """Training batches read on the host (lmlab.data.host_loader), stacked [steps, micro-batches,
    rows, ...]: rows split over the batch axes, as `shard_batch` splits batches drawn on device."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    return NamedSharding(mesh, P(None, None, axes or None))


def put(tree, shardings):
    """Host (or one-device) arrays -> global arrays with the given shardings (a pytree prefix).

    Single process: jax.device_put. Several processes: every process holds the same full value
    (a replicated input, or a state built identically from the seed) and contributes the shards
    that live on its own devices.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    leaves, treedef = jax.tree.flatten(tree)
    sharding_leaves = treedef.flatten_up_to(shardings) if not isinstance(shardings, jax.sharding.Sharding) \
        else [shardings] * len(leaves)

    def one(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return treedef.unflatten([one(x, s) for x, s in zip(leaves, sharding_leaves)])


def put_replicated(tree, mesh: Mesh):
    """The same value on every device of the mesh (e.g. the training token array)."""
    return put(tree, replicated(mesh))


def mesh_of(tree) -> Mesh | None:
    """The mesh the arrays of `tree` (parameters) live on if it has more than one device, else None.

    How code that is handed only parameters (an evaluator, decoding) learns where to run.
    """
    leaves = jax.tree.leaves(tree)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh
    return None


def replicate_like(x, params):
    """Puts a host input (a prompt) replicated on the mesh that `params` live on, if they live on
    a multi-device NamedSharding; otherwise returns it unchanged (the single-device path)."""
    mesh = mesh_of(params)
    return x if mesh is None else put_replicated(x, mesh)
