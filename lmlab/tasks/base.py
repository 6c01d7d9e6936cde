"""What a training objective is to the trainer: data, batches, loss, metrics, frozen models.

The trainer (lmlab.train) is the same for every objective; a `Task`, chosen by the config's `task`
key (lmlab.tasks.TASKS), supplies what differs:

  * `families`: the model families it trains (a wrong pair is a config error);
  * `prepare(run_dir)`: corpus -> tokenizer -> arrays, once per run directory (idempotent);
  * `sample_batch(train_arrays, key)`: one micro-batch drawn on device (pure, jittable), so a
    batch is a function of (data key, step) and resuming reproduces it;
  * `frozen_sources()`: {name: run directory} of models the loss reads but never trains (a
    distillation teacher, a DPO reference). The trainer loads them read-only, shards them like
    parameters and passes them into the jitted step (lmlab.train.frozen);
  * `loss(model, batch, dropout_key, frozen)`: a `LossOutput` (objective, target count, named
    metrics), where `frozen` maps those names to models;
  * `make_evaluator(graphdef, data, frozen)`: `evaluate(params, full=False) -> dict` with at least
    "val_loss" and each training metric's held-out value as "eval/<name>"; `full=True` is the
    end-of-run evaluation on the whole held-out split. Held-out batches run data-parallel on the
    mesh the parameters live on, like training batches: split over the batch axes, zero-weight
    rows filling the last one, sums over the global batch (lmlab.eval.batching.data_parallel_eval,
    eval_batches), so every process gets the same metrics.
"""

from __future__ import annotations

import abc
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import jax

from lmlab.data.token_file import token_dtype
from lmlab.tokenizers import Tokenizer


@dataclass
class TaskData:
    tokenizer: Tokenizer
    train: dict[str, Any]        # host arrays; moved to device once and passed to sample_batch
    val: Any                     # whatever the task's evaluator reads
    extra: dict = field(default_factory=dict)  # task-specific; lm with data.loader host: "host_sources"


class LossOutput(NamedTuple):
    """What a task's loss gives the trainer, all scalars: `objective` is minimised; `metrics` are
    means over the batch's `n_targets` scored targets (tokens, masked positions, examples, pairs),
    logged under their names (e.g. "nll", "rewards/margins"). Gradient accumulation weights each
    micro-batch's objective and metrics by its count (lmlab.train.step)."""
    objective: jax.Array
    n_targets: jax.Array
    metrics: dict[str, jax.Array]


class Task(abc.ABC):
    families: tuple[str, ...] = ()  # model families this objective trains

    def __init__(self, config):
        self.config = config

    def frozen_sources(self) -> dict[str, str]:
        """{name: run directory} of the frozen models `loss` receives; none by default."""
        return {}

    @abc.abstractmethod
    def prepare(self, run_dir: pathlib.Path) -> TaskData: ...

    def prepare_heldout(self, run_dir: pathlib.Path) -> TaskData:
        """What `make_evaluator` needs, for evaluating a trained run (`lmlab eval`); tasks whose
        training data is costly to build skip it here."""
        return self.prepare(run_dir)

    @abc.abstractmethod
    def sample_batch(self, train_arrays: dict[str, jax.Array], key: jax.Array) -> Any: ...

    @abc.abstractmethod
    def loss(self, model, batch, dropout_key: jax.Array | None, frozen: Mapping[str, Any]) -> LossOutput:
        """The objective, its target count and named metrics (at least "nll", the plain mean NLL)."""

    @abc.abstractmethod
    def make_evaluator(self, graphdef, data: TaskData, frozen: Mapping[str, Any] | None = None) -> Callable[..., dict]:
        """`evaluate(params, full=False, batch_size=0) -> dict`; `frozen` are the loaded frozen models
        (lmlab.train.frozen.FrozenModel), for held-out metrics that need them (none: skip those)."""

    def synthetic_train_arrays(self, vocab_size: int, key: jax.Array) -> dict[str, jax.Array]:
        """Random training arrays of the real ones' kind and dtype, for `lmlab bench train`."""

        n = max(1 << 20, 2 * (self.config.data.seq_len + 1))
        tokens_N = jax.random.randint(key, (n,), 0, vocab_size).astype(token_dtype(vocab_size))
        return {"tokens": tokens_N}

    @abc.abstractmethod
    def flops_per_token(self, vocab_size: int) -> float:
        """Training FLOPs per token as `tokens_per_batch` counts tokens (lmlab.flops conventions)."""

    def tokens_per_batch(self) -> int:
        """Tokens in one micro-batch, for tokens/s."""
        return self.config.data.batch_size * self.config.data.seq_len
