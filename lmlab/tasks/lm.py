"""Next-token prediction (decoder-only LMs): random windows of the token stream, shifted targets."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lmlab import parallel
from lmlab.data.prepare import prepare, prepare_heldout
from lmlab.eval.lm import eval_windows, evaluate
from lmlab.tasks.base import Task, TaskData
from lmlab.train.losses import token_cross_entropy


def sample_windows(tokens_N: jax.Array, key: jax.Array, batch: int, seq_len: int) -> jax.Array:
    """[batch, seq_len + 1] windows at uniform random offsets (inputs and shifted targets)."""
    starts_B = jax.random.randint(key, (batch,), 0, tokens_N.shape[0] - seq_len)
    return tokens_N[starts_B[:, None] + jnp.arange(seq_len + 1)].astype(jnp.int32)


def lm_loss(model, windows_BT1, dropout_key, *, label_smoothing=0.0, z_loss=0.0):
    logits_BTV, _ = model(windows_BT1[:, :-1], dropout_key=dropout_key)
    objective_BT, nll_BT = token_cross_entropy(logits_BTV, windows_BT1[:, 1:], label_smoothing=label_smoothing,
                                               z_loss=z_loss)
    return objective_BT.mean(), nll_BT.mean(), jnp.asarray(nll_BT.size, jnp.float32)


def make_lm_eval_step(graphdef):
    """Jitted eval(params, windows_BT1, weights_BT) -> summed nll of the weighted targets, run
    data-parallel on the mesh the parameters live on (lmlab.parallel.data_parallel_eval)."""
    from flax import nnx

    def eval_step(params, windows_BT1, weights_BT):
        model = nnx.merge(graphdef, nnx.State(params))
        logits_BTV, _ = model(windows_BT1[:, :-1])
        _, nll_BT = token_cross_entropy(logits_BTV, windows_BT1[:, 1:])
        return (nll_BT * weights_BT).sum()

    return parallel.data_parallel_eval(eval_step)


class LMTask(Task):
    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        data = prepare(self.config, run_dir)
        if len(data.train_tokens) <= self.config.data.seq_len + 1:
            raise ValueError(f"training split has {len(data.train_tokens)} tokens, fewer than data.seq_len + 2")
        return TaskData(data.tokenizer, {"tokens": np.asarray(data.train_tokens)}, data.val_tokens)

    def prepare_heldout(self, run_dir: pathlib.Path) -> TaskData:
        data = prepare_heldout(self.config, run_dir)
        return TaskData(data.tokenizer, {}, data.val_tokens)

    def sample_batch(self, train_arrays, key):
        return sample_windows(train_arrays["tokens"], key, self.config.data.batch_size, self.config.data.seq_len)

    def loss(self, model, batch, dropout_key):
        t = self.config.train
        return lm_loss(model, batch, dropout_key, label_smoothing=t.label_smoothing, z_loss=t.z_loss)

    def make_evaluator(self, graphdef, data: TaskData):
        c = self.config
        eval_step = make_lm_eval_step(graphdef)
        byte_lengths = data.tokenizer.token_byte_lengths()
        periodic = eval_windows(data.val, c.data.seq_len, c.train.eval_batches * c.data.batch_size)

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            windows, weights = eval_windows(data.val, c.data.seq_len) if full else periodic
            # Batches split evenly over the mesh's batch axes; weight-0 windows fill the last one.
            bs = parallel.eval_batch_size(batch_size or c.data.batch_size, parallel.mesh_of(params))
            return evaluate(eval_step, params, windows, weights, byte_lengths, bs)

        return evaluator
