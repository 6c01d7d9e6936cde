"""Starting a run from another run's parameters (`train.init_from`): fine-tuning, or an import."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from lmlab import config as config_lib
from lmlab.runs import load_run

log = logging.getLogger("lmlab")


def load_init_params(state: dict, source_run) -> dict:
    """Starts from another run's latest parameters (fine-tuning, or an imported checkpoint).

    Every parameter whose path exists in the source run is copied (the shapes must agree); the
    rest (e.g. a new classification head) keep their fresh initialisation. The optimizer state is
    not copied: fine-tuning starts its own schedule.
    """
    source = load_run(source_run)
    src = config_lib.flatten(source.params, "/")
    dst = config_lib.flatten(state["params"], "/")
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
