"""The train state pytree: {"params", "opt_state", "step", "rng"} built from a config.

"params" are the parameters the run trains: all of the model's, or with LoRA (config lora.rank >
0, lmlab.nn.lora) only the adapters; then the base weights are the frozen model `BASE` (the
train.init_from run, lmlab.train.frozen), merged in by `trained_model` / `full_params`, and the
optimizer state and checkpoints hold the adapters alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab import sharding
from lmlab.config import ConfigError
from lmlab.models import build_model
from lmlab.models.quantize import quantize_model
from lmlab.nn import lora
from lmlab.train.optimizer import make_optimizer

BASE = "base"  # the frozen model whose weights a LoRA run adapts


def uses_lora(config) -> bool:
    return "lora" in config and config.lora.rank > 0


def build_trained_model(config, vocab_size: int) -> nnx.Module:
    """The config's model, quantized as config.quant says, with LoRA adapters when lora.rank > 0."""
    model = quantize_model(build_model(config.model, vocab_size, seed=config.seed), config.get("quant"))
    if uses_lora(config):
        settings = config.lora
        if settings.dropout and not getattr(model, "adapter_dropout", False):
            raise ConfigError(f"config key 'lora.dropout' needs a model that passes dropout keys to its dense "
                              f"layers (the gpt family); model.family is {config.model.family}: set lora.dropout=0")
        try:
            lora.add_adapters(model, rank=settings.rank, alpha=settings.alpha, targets=settings.targets,
                              seed=config.seed, dropout=settings.dropout)
        except ValueError as e:  # a targets regex that matches no layer: a config error
            raise ConfigError(str(e)) from None
    return model


def uses_dropout(config) -> bool:
    """Whether a train step draws dropout keys: model dropout, or LoRA dropout on the adapters."""
    return config.model.dropout > 0 or (uses_lora(config) and config.lora.dropout > 0)


def split_trained(model, config):
    """(graphdef, the trained variables): all parameters, or a LoRA run's adapters."""
    if uses_lora(config):
        graphdef, adapters, _ = nnx.split(model, nnx.LoRAParam, ...)
        return graphdef, adapters
    return nnx.split(model)


def full_params(params: dict, frozen_params: dict) -> dict:
    """The whole model's parameters: `params`, plus a LoRA run's frozen base weights."""
    if BASE not in frozen_params:
        return params

    def union(a, b):
        return {k: union(a[k], b[k]) if k in a and k in b else (a[k] if k in a else b[k]) for k in {**a, **b}}

    return union(frozen_params[BASE], params)


def trained_model(graphdef, params: dict, frozen_params: dict) -> nnx.Module:
    return nnx.merge(graphdef, nnx.State(full_params(params, frozen_params)))


def initial_rng(seed: int) -> jax.Array:
    """The state's "rng": raw key data, so checkpoints store it as a plain uint32 array."""
    return jax.random.key_data(jax.random.key(seed))


def init_state(config, vocab_size: int, mesh=None, *, sharded_init: bool | None = None):
    """Returns (model, graphdef, optimizer, state); params in the state are a plain nested dict.

    With a device mesh (lmlab.sharding) the state is placed with the shardings its logical axes
    give (`abstract_state`), built in one of two ways (equal up to float rounding, ~1e-8: XLA
    fuses the initialisers differently when it compiles them as one program):
      * sharded_init=True: one jitted initialiser with those out_shardings, so no device ever
        holds the whole unsharded model (`model` is then abstract: shapes only). The default on
        GPU/TPU meshes of more than one device.
      * otherwise: built eagerly as without a mesh, then split onto the mesh (lmlab.sharding.put).
        The default on CPU, where compiling the initialiser takes longer than running it, and on
        one device, where it reproduces the mesh-less path bit for bit.
    """
    if mesh is not None:
        model, graphdef, tx, abstract = abstract_state(config, vocab_size, mesh)
        shardings = sharding.shardings_of(abstract)
        if sharded_init is None:
            sharded_init = mesh.size > 1 and jax.default_backend() != "cpu"
        if not sharded_init:
            model, graphdef, tx, state = init_state(config, vocab_size)
            return model, graphdef, tx, sharding.put(state, shardings)

        def build():
            return init_state(config, vocab_size)[3]

        return model, graphdef, tx, jax.jit(build, out_shardings=shardings)()
    model = build_trained_model(config, vocab_size)
    graphdef, state = split_trained(model, config)
    params = nnx.to_pure_dict(state)
    tx = make_optimizer(config.train)
    train_state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
                   "rng": initial_rng(config.seed)}
    return model, graphdef, tx, train_state


def abstract_state(config, vocab_size: int, mesh):
    """(abstract model, graphdef, optimizer, state of jax.ShapeDtypeStruct with shardings on `mesh`):
    what a checkpoint restores into, without computing an initialisation."""
    model = nnx.eval_shape(lambda: build_trained_model(config, vocab_size))
    graphdef, variables = split_trained(model, config)
    tx = make_optimizer(config.train)
    shapes = jax.eval_shape(lambda: init_state(config, vocab_size)[3])
    shardings = sharding.train_state_shardings(variables, tx, mesh)
    state = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                         shapes, shardings)
    return model, graphdef, tx, state
