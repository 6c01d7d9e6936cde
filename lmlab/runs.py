"""Opening a finished or running run directory for evaluation and sampling."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from flax import nnx

from lmlab import config as config_lib
from lmlab import parallel
from lmlab.tokenizers import Tokenizer, load_tokenizer
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.state import abstract_state


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
    if it fits the devices here, else every device on `data`; lmlab.parallel.mesh_for_run)."""
    parallel.initialize_distributed()
    run_dir = pathlib.Path(run_dir)
    config = config_lib.load_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    mesh = mesh if mesh is not None else parallel.mesh_for_run(config)
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
    model = nnx.merge(graphdef, nnx.State(state["params"]))
    return LoadedRun(config, tokenizer, model, state["params"], step, run_dir)
