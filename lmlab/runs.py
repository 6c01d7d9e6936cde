"""Opening a finished or running run directory for evaluation and sampling."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import jax
from flax import nnx

from lmlab import config as config_lib
from lmlab import distributed
from lmlab import sharding
from lmlab.interop.rundir import write_run
from lmlab.nn import lora
from lmlab.tokenizers import Tokenizer, load_tokenizer
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.state import BASE, abstract_state, full_params, uses_lora


@dataclass
class LoadedRun:
    config: object
    tokenizer: Tokenizer
    model: nnx.Module
    params: dict
    step: int
    run_dir: pathlib.Path


def load_run(run_dir: str | pathlib.Path, mesh=None) -> LoadedRun:
    """The latest checkpoint's parameters, sharded over `mesh` (default: the run's configured mesh
    if it fits the devices here, else every device on `data`; lmlab.sharding.mesh_for_run)."""
    distributed.initialize_distributed()
    run_dir = pathlib.Path(run_dir)
    config = config_lib.load_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    mesh = mesh if mesh is not None else sharding.mesh_for_run(config)
    _, graphdef, _, state = abstract_state(config, tokenizer.vocab_size, mesh)  # restored into, not computed
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        restored = checkpointer.restore_latest(state)
    finally:
        checkpointer.close()
    if restored is None and checkpointer.moved_aside:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint: {len(checkpointer.moved_aside)} damaged "
                                f"one(s) moved to {checkpointer.directory}/corrupt-*")
    if restored is None and checkpointer.skipped:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint: step(s) "
                                f"{', '.join(map(str, checkpointer.skipped))} are damaged (left in place: read-only)")
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint yet; train it first")
    step, state, _ = restored
    # A LoRA run's checkpoints hold the adapters: the weights they adapt come from its base run.
    frozen = {BASE: load_run(config.train.init_from, mesh=mesh).params} if uses_lora(config) else {}
    params = full_params(state["params"], frozen)
    return LoadedRun(config, tokenizer, nnx.merge(graphdef, nnx.State(params)), params, step, run_dir)


def merge_lora_run(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path) -> pathlib.Path:
    """A plain run directory (no adapters, no base run) whose model equals the LoRA run's: every
    adapter folded into its layer's weights (lmlab.nn.lora.merge_adapters)."""
    run = load_run(run_dir)
    if not uses_lora(run.config):
        raise ValueError(f"{run_dir} is not a LoRA run (lora.rank is 0): there is nothing to merge")
    model = lora.merge_adapters(nnx.merge(*nnx.split(run.model)))  # a copy: run.model stays adapted
    config = config_lib.apply_overrides(run.config, ["lora.rank=0", "train.init_from="])
    params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return write_run(out_dir, config, run.tokenizer, params)
