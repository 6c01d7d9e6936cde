"""What a training objective is to the trainer: data, batches, loss and held-out metrics.

The trainer (lmlab.train) is the same for every model family; a `Task` supplies what differs:

  * `prepare(run_dir)`: corpus -> tokenizer -> arrays, once per run directory (idempotent);
  * `sample_batch(train_arrays, key)`: one micro-batch drawn on device (pure, jittable), so a
    batch is a function of (data key, step) and resuming reproduces it;
  * `loss(model, batch, dropout_key)`: (objective to minimise, mean token NLL), both scalars;
  * `make_evaluator(graphdef, data)`: `evaluate(params, full=False) -> dict` with at least
    "val_loss"; `full=True` is the end-of-run evaluation on the whole held-out split. Held-out
    batches run data-parallel on the mesh the parameters live on, like training batches: split
    over the batch axes, zero-weight rows filling the last one, sums over the global batch
    (lmlab.parallel.data_parallel_eval, eval_batches), so every process gets the same metrics.
"""

from __future__ import annotations

import abc
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable

import jax

from lmlab.tokenizers import Tokenizer


@dataclass
class TaskData:
    tokenizer: Tokenizer
    train: dict[str, Any]        # host arrays; moved to device once and passed to sample_batch
    val: Any                     # whatever the task's evaluator reads
    extra: dict = field(default_factory=dict)


class Task(abc.ABC):
    def __init__(self, config):
        self.config = config

    @abc.abstractmethod
    def prepare(self, run_dir: pathlib.Path) -> TaskData: ...

    def prepare_heldout(self, run_dir: pathlib.Path) -> TaskData:
        """What `make_evaluator` needs, for evaluating a trained run (`lmlab eval`); tasks whose
        training data is costly to build skip it here."""
        return self.prepare(run_dir)

    @abc.abstractmethod
    def sample_batch(self, train_arrays: dict[str, jax.Array], key: jax.Array) -> Any: ...

    @abc.abstractmethod
    def loss(self, model, batch, dropout_key: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(objective, nll, n_targets): the training objective and the plain NLL as means over the
        batch's n_targets scored targets (tokens, masked positions, examples). Gradient
        accumulation weights each micro-batch by its count (lmlab.train.step)."""

    @abc.abstractmethod
    def make_evaluator(self, graphdef, data: TaskData) -> Callable[..., dict]: ...

    def synthetic_train_arrays(self, vocab_size: int, key: jax.Array) -> dict[str, jax.Array]:
        """Random training arrays of the real ones' kind and dtype, for `lmlab bench train`."""
        from lmlab.data.token_file import token_dtype

        n = max(1 << 20, 2 * (self.config.data.seq_len + 1))
        tokens_N = jax.random.randint(key, (n,), 0, vocab_size).astype(token_dtype(vocab_size))
        return {"tokens": tokens_N}

    def tokens_per_batch(self) -> int:
        """Tokens in one micro-batch, for tokens/s."""
        return self.config.data.batch_size * self.config.data.seq_len
