"""Write imported weights as an ordinary lmlab run directory, so `lmlab.runs.load_run` opens it.

    RUN/config.json       full config: configs/base.py defaults + the imported model's settings
    RUN/tokenizer/        the imported tokenizer (lmlab's own format)
    RUN/checkpoints/0/    the train state at step 0, laid out exactly as `init_state` builds it
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

import lmlab
from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.models.quantize import quantize_model
from lmlab.tokenizers import Tokenizer
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.optimizer import make_optimizer
from lmlab.train.state import init_state

BASE_CONFIG = pathlib.Path(lmlab.__file__).resolve().parent.parent / "configs" / "base.py"


def make_config(model: dict, tokenizer: Tokenizer, *, prompts: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """configs/base.py with the imported model's settings, validated like any run config."""
    config = config_lib.load_config_file(BASE_CONFIG)
    for key, value in model.items():
        if key not in config.model:
            raise config_lib.ConfigError(f"imported model setting 'model.{key}' is not a config key of "
                                         f"this lmlab version ({BASE_CONFIG})")
        config.model[key] = value
    config.task = config_lib.infer_task(config)
    config.tokenizer.kind = tokenizer.kind
    config.tokenizer.vocab_size = tokenizer.vocab_size
    config.tokenizer.special_tokens = tuple(tokenizer.special_ids)
    config.data.seq_len = min(config.data.seq_len, config.model.max_len)
    config.sample.prompts = tuple(prompts)
    return config_lib.validate(config)


def _tree_shapes(tree) -> dict:
    return {jax.tree_util.keystr(path): tuple(np.shape(x)) for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _abstract_model(config, vocab_size: int) -> nnx.Module:
    """The config's model (quantized as config.quant says) without an initialization."""
    return nnx.eval_shape(lambda: quantize_model(build_model(config.model, vocab_size, seed=config.seed),
                                                 config.get("quant")))


def abstract_params(config, vocab_size: int) -> dict:
    """The model's param tree as jax.ShapeDtypeStruct leaves: shapes without an initialization."""
    return nnx.to_pure_dict(nnx.state(_abstract_model(config, vocab_size)))


def _as_model_dtypes(config, vocab_size: int, params: dict) -> dict:
    """`params` as jax arrays of the model's dtypes: float32 weights (imported float16 ones too),
    a quantized model's integer payloads as they are."""
    want = abstract_params(config, vocab_size)
    return jax.tree_util.tree_map(lambda x, a: jnp.asarray(x, a.dtype), params, want)


def check_params(config, vocab_size: int, params: dict) -> None:
    """Raise a ValueError naming the first parameter whose path or shape differs from the model's."""
    want = _tree_shapes(abstract_params(config, vocab_size))
    have = _tree_shapes(params)
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            raise ValueError(f"imported parameter {name}: shape {have.get(name)}, but the "
                             f"{config.model.family} model built from the config expects {want.get(name)}")


def model_with_params(config, vocab_size: int, params: dict) -> nnx.Module:
    """The model of `config` holding `params`, without spending time on a random initialization."""
    check_params(config, vocab_size, params)
    graphdef, _ = nnx.split(_abstract_model(config, vocab_size))
    return nnx.merge(graphdef, nnx.State(_as_model_dtypes(config, vocab_size, params)))


def train_state(config, vocab_size: int, params: dict) -> dict:
    """The step-0 train state holding `params`, in the layout `init_state` defines.

    Built directly (an eager random initialization of a 135M model only to overwrite it costs
    tens of seconds on a busy CPU), then checked leaf by leaf against `init_state`'s abstract
    shapes, so a change there cannot silently produce checkpoints `load_run` cannot restore.
    """

    check_params(config, vocab_size, params)
    params = _as_model_dtypes(config, vocab_size, params)
    state = {"params": params, "opt_state": make_optimizer(config.train).init(params),
             "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.key(config.seed))}
    want = jax.eval_shape(lambda: init_state(config, vocab_size)[3])
    have = jax.eval_shape(lambda: state)
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(have) or any(
            (a.shape, a.dtype) != (b.shape, b.dtype)
            for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(have))):
        raise RuntimeError("lmlab.interop.rundir.train_state no longer matches lmlab.train.state.init_state")
    return state


def write_run(run_dir: str | pathlib.Path, config, tokenizer: Tokenizer, params: dict) -> pathlib.Path:
    """Create `run_dir` (it must not exist or be empty) holding config, tokenizer and a step-0 checkpoint."""

    run_dir = pathlib.Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(f"{run_dir} already exists and is not empty; choose a new --out directory")
    state = train_state(config, tokenizer.vocab_size, params)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, run_dir)
    tokenizer.save(run_dir / "tokenizer")
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        checkpointer.save(0, state, {"step": 0, "data_position": 0, "imported": True})
    finally:
        checkpointer.close()
    return run_dir
