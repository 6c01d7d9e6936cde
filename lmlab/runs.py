"""Opening a finished or running run directory for evaluation and sampling."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import jax
from flax import nnx

from lmlab import config as config_lib
from lmlab import distributed
from lmlab import sharding
from lmlab.data.prepare import same_files
from lmlab.interop.rundir import write_run
from lmlab.models.quantize import describe, is_quantized, quantize_model
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


def load_reward_run(reward_dir: str | pathlib.Path, policy_dir: str | pathlib.Path) -> LoadedRun:
    """The reward model (a task=reward run) that ranks `policy_dir`'s samples: same tokenizer files."""
    reward = load_run(reward_dir)
    if reward.config.task != "reward":
        raise config_lib.ConfigError(f"{reward_dir} is a '{reward.config.task}' run, not a reward model (task=reward)")
    if not same_files(pathlib.Path(policy_dir) / "tokenizer", reward.run_dir / "tokenizer"):
        raise config_lib.ConfigError(f"{reward_dir} has another tokenizer than {policy_dir}")
    return reward


def quantize_run(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path, overrides: list[str]) -> dict:
    """Writes a run directory holding the run's weights quantized as `overrides` ("quant.weights=int4",
    "quant.group=64", ...) set the config's quant section; returns its sizes and policy.

    Refused before anything is written: a run that is already quantized, a LoRA run (merge it
    first: its base weights live in another run), a bad quant setting, a non-empty `out_dir`.
    """
    config = config_lib.load_run_config(run_dir)
    if is_quantized(config.quant):
        raise config_lib.ConfigError(f"{run_dir} is already quantized (quant.weights={config.quant.weights}, "
                                     f"quant.kv={config.quant.kv}); quantize the float run it came from")
    if uses_lora(config):
        raise config_lib.ConfigError(f"{run_dir} is a LoRA run: merge it first (lmlab lora merge), then quantize that")
    config = config_lib.validate(config_lib.apply_overrides(config, [*overrides, "quant.qat=none"]))
    if not is_quantized(config.quant):
        raise config_lib.ConfigError("nothing to quantize: set the weights (bfloat16, int8, int4) or the KV cache (int8)")
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} already exists and is not empty; choose a new --out directory")
    run = load_run(run_dir)
    n_weights = sum(x.size for x in jax.tree.leaves(run.params))
    model = quantize_model(nnx.merge(*nnx.split(run.model)), config.quant)  # a copy: run.model stays float
    params = jax.device_get(nnx.to_pure_dict(nnx.state(model)))
    write_run(out_dir, config, run.tokenizer, params)
    return {"run_dir": str(out_dir), "quantized_from": str(run_dir), "policy": describe(config.quant),
            "params": int(n_weights), "weight_bytes": int(sum(x.nbytes for x in jax.tree.leaves(params))),
            "float32_bytes": 4 * int(n_weights), "bfloat16_bytes": 2 * int(n_weights),
            "checkpoint_bytes_on_disk": dir_bytes(out_dir / "checkpoints")}


def dir_bytes(path: str | pathlib.Path) -> int:
    """Bytes of the files under `path` (what `du --apparent-size` counts)."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())
