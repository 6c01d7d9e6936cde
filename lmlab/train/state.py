"""The train state pytree: {"params", "opt_state", "step", "rng"} built from a config."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab import config as config_lib

from lmlab.models import build_model
from lmlab.train.optimizer import make_optimizer


def init_state(config, vocab_size: int, mesh=None, *, sharded_init: bool | None = None):
    """Returns (model, graphdef, optimizer, state); params in the state are a plain nested dict.

    With a device mesh (lmlab.parallel) the state is placed with the shardings its logical axes
    give (`abstract_state`), built in one of two ways (equal up to float rounding, ~1e-8: XLA
    fuses the initialisers differently when it compiles them as one program):
      * sharded_init=True: one jitted initialiser with those out_shardings, so no device ever
        holds the whole unsharded model (`model` is then abstract: shapes only). The default on
        GPU/TPU meshes of more than one device.
      * otherwise: built eagerly as without a mesh, then split onto the mesh (lmlab.parallel.put).
        The default on CPU, where compiling the initialiser takes longer than running it, and on
        one device, where it reproduces the mesh-less path bit for bit.
    """
    if mesh is not None:
        from lmlab import parallel

        model, graphdef, tx, abstract = abstract_state(config, vocab_size, mesh)
        shardings = parallel.shardings_of(abstract)
        if sharded_init is None:
            sharded_init = mesh.size > 1 and jax.default_backend() != "cpu"
        if not sharded_init:
            model, graphdef, tx, state = init_state(config, vocab_size)
            return model, graphdef, tx, parallel.put(state, shardings)

        def build():
            return init_state(config, vocab_size)[3]

        return model, graphdef, tx, jax.jit(build, out_shardings=shardings)()
    model = build_model(config.model, vocab_size, seed=config.seed)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = make_optimizer(config.train)
    train_state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
                   "rng": jax.random.key_data(jax.random.key(config.seed))}
    return model, graphdef, tx, train_state


def abstract_state(config, vocab_size: int, mesh):
    """(abstract model, graphdef, optimizer, state of jax.ShapeDtypeStruct with shardings on `mesh`):
    what a checkpoint restores into, without computing an initialisation."""
    from lmlab import parallel

    model = nnx.eval_shape(lambda: build_model(config.model, vocab_size, seed=config.seed))
    graphdef, variables = nnx.split(model)
    tx = make_optimizer(config.train)
    shapes = jax.eval_shape(lambda: init_state(config, vocab_size)[3])
    shardings = parallel.train_state_shardings(variables, tx, mesh)
    state = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                         shapes, shardings)
    return model, graphdef, tx, state


log = logging.getLogger("lmlab")


def _flat(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, name + "/") if isinstance(value, dict) else {name: value})
    return out


def load_init_params(state: dict, source_run) -> dict:
    """Starts from another run's latest parameters (fine-tuning, or an imported checkpoint).

    Every parameter whose path exists in the source run is copied (the shapes must agree); the
    rest (e.g. a new classification head) keep their fresh initialisation. The optimizer state is
    not copied: fine-tuning starts its own schedule.
    """
    from lmlab.runs import load_run

    source = load_run(source_run)
    src = _flat(source.params)
    dst = _flat(state["params"])
    copied, fresh = [], []
    for name, value in dst.items():
        if name not in src:
            fresh.append(name)
            continue
        if src[name].shape != value.shape:
            raise config_lib.ConfigError(
                f"train.init_from={source_run}: parameter {name} has shape {tuple(src[name].shape)} there, "
                f"{tuple(value.shape)} in this model")
        copied.append(name)
    if not copied:
        raise config_lib.ConfigError(f"train.init_from={source_run}: no parameter of this model exists in that run")

    def pick(path, value):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return jnp.asarray(src[name], value.dtype) if name in src else value

    params = jax.tree_util.tree_map_with_path(pick, state["params"])
    shown = f"; {len(fresh)} fresh: " + ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else "") if fresh else ""
    log.info("initialised %d parameters from %s (step %d)%s", len(copied), source_run, source.step, shown)
    return {**state, "params": params}
