"""Devices, meshes and shardings: the only module of lmlab that knows about devices and processes.

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

Multi-host. `initialize_distributed()` starts jax.distributed from the environment (explicit
LMLAB_COORDINATOR / LMLAB_NUM_PROCESSES / LMLAB_PROCESS_ID, a SLURM step with several tasks, or a
Cloud TPU VM); every process then runs the same program on the global mesh. Batches are drawn on
device from one key, so all processes agree on the global batch's indices, and the batch sharding
constraint makes each device gather only its own rows: a process reads only its slice of every
global batch (see `shard_batch`). Held-out batches, built on the host from data every process
holds, are put split over the batch axes the same way, each process supplying its devices' rows
(see `put_batch`, `data_parallel_eval`).
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import importlib.util
import logging
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lmlab import config as config_lib
from lmlab.eval import progress

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
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


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
    outputs = [step(params, *batch) for batch in eval_batches(arrays, batch_size, mesh_of(params))]
    totals = [0.0] * (len(outputs[0]) if outputs else 0)
    for output in progress.track(outputs, total=len(outputs)):
        totals = [total + float(value) for total, value in zip(totals, jax.device_get(output))]
    return tuple(totals)


def batch_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """An array of a batch (rows first) split over the batch axes by the logical rules."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh))


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
                             f"axes ({n} ways); pad it to a multiple (lmlab.parallel.eval_batches)")
        return put(x, batch_sharding(x.shape, mesh))

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
        mesh = mesh_of(params)
        if mesh not in jitted:
            if mesh is None:
                jitted[mesh] = jax.jit(fn)
            else:
                def on_mesh(p, *b, _mesh=mesh):
                    with activate(_mesh):
                        return fn(p, *shard_batch(b, _mesh))

                jitted[mesh] = jax.jit(on_mesh, out_shardings=replicated(mesh))
        return jitted[mesh](params, *put_batch(batch, mesh))

    return step


# ----------------------------------------------------------------------------------- processes

def is_primary() -> bool:
    """Process 0 writes logs, metrics, configs and summaries; every process takes part in
    computation and checkpointing."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier across processes (no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any (e.g. a SIGTERM that reached one host)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def primary_first(fn):
    """Runs fn() on process 0, then on the others (e.g. data preparation into a shared run
    directory: the others find the files and only read them)."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if is_primary() else None
    sync("lmlab_primary_first")
    return result if is_primary() else fn()


def topology() -> dict:
    """What this process sees after joining the others (`./launch.sh devices`)."""
    initialize_distributed()
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "backend": jax.default_backend(), "local_devices": [str(d) for d in jax.local_devices()],
            "global_device_count": jax.device_count()}


def _on_cloud_tpu_vm() -> bool:
    """A Google TPU on the PCI bus and libtpu installed: how JAX itself recognises a TPU VM."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == "0x1ae0":
                    return True
        except OSError:
            pass
    return False


def _tasks_on_this_node(env: Mapping[str, str]) -> int | None:
    """SLURM tasks of this step on this node, from SLURM_STEP_TASKS_PER_NODE ("4(x2),3") and
    SLURM_NODEID, or SLURM_NTASKS_PER_NODE."""
    spec, node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE"), env.get("SLURM_NODEID")
    if spec and node is not None:
        counts = []
        for part in spec.split(","):
            count, _, repeat = part.partition("(x")
            counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
        if int(node) < len(counts):
            return counts[int(node)]
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    return int(per_node) if per_node and per_node.isdigit() else None


def distributed_args(env: Mapping[str, str] | None = None, *, on_tpu_vm: bool | None = None) -> dict | None:
    """The jax.distributed.initialize arguments this environment asks for, or None (one process).

    In order: LMLAB_DISTRIBUTED=0 turns it off; explicit LMLAB_COORDINATOR (host:port),
    LMLAB_NUM_PROCESSES and LMLAB_PROCESS_ID (all three); a SLURM step with more than one task
    (`srun`, one process per host or per GPU); a Cloud TPU VM (every worker of a pod slice runs
    the same command; JAX reads the topology from the TPU metadata). LMLAB_LOCAL_DEVICE_IDS
    (comma-separated) picks the accelerators a process drives.
    """
    env = os.environ if env is None else env
    if env.get("LMLAB_DISTRIBUTED", "").lower() in ("0", "off", "false", "no"):
        return None
    args: dict[str, Any] = {}
    if env.get("LMLAB_LOCAL_DEVICE_IDS"):
        args["local_device_ids"] = [int(i) for i in env["LMLAB_LOCAL_DEVICE_IDS"].split(",") if i.strip()]
    explicit = [k for k in ("LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID") if env.get(k)]
    if explicit:
        if len(explicit) < 3:
            missing = sorted({"LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID"} - set(explicit))
            raise config_lib.ConfigError(f"multi-host start needs {', '.join(missing)} as well as {', '.join(explicit)}")
        try:
            num, pid = int(env["LMLAB_NUM_PROCESSES"]), int(env["LMLAB_PROCESS_ID"])
        except ValueError:
            raise config_lib.ConfigError("LMLAB_NUM_PROCESSES and LMLAB_PROCESS_ID must be integers") from None
        if not 0 <= pid < num:
            raise config_lib.ConfigError(f"LMLAB_PROCESS_ID={pid} must be in [0, LMLAB_NUM_PROCESSES={num})")
        return {"coordinator_address": env["LMLAB_COORDINATOR"], "num_processes": num, "process_id": pid, **args}
    if env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_NODELIST") and int(env.get("SLURM_NTASKS", "1")) > 1:
        # JAX's SLURM detection finds the coordinator (first node of the step), the process
        # count and id. Its default gives each process one local device, [SLURM_LOCALID]: right
        # for one task per GPU, wrong for one task per host, which should drive every GPU it sees.
        if "local_device_ids" not in args:
            visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            gpus_on_node = env.get("SLURM_GPUS_ON_NODE", "")
            if _tasks_on_this_node(env) == 1:
                n = len(visible) or (int(gpus_on_node) if gpus_on_node.isdigit() else 0)
                if n:
                    args["local_device_ids"] = list(range(n))
            elif len(visible) == 1:  # srun --gpus-per-task=1 already bound one GPU to this task
                args["local_device_ids"] = [0]
        return {"cluster_detection_method": "slurm", **args}
    if on_tpu_vm if on_tpu_vm is not None else _on_cloud_tpu_vm():
        return {**args}
    return None


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Starts jax.distributed if the environment asks for several processes (see
    distributed_args); idempotent. Must run before anything touches a device. On processes
    other than 0 the lmlab logger is raised to WARNING: only process 0 logs progress.
    Returns whether this is a multi-process run."""
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = distributed_args(env)
    if args is None:
        return False
    jax.distributed.initialize(**args)
    if jax.process_index() != 0:
        log.setLevel(logging.WARNING)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1
