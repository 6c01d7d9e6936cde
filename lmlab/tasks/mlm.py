"""Masked-language-model pretraining (BERT family): the objective of `configs/bert_shakespeare.py`.

Data: the same token files as the LM task (lmlab.data.prepare). A training example is
`[CLS] + (data.seq_len - 2) tokens at a random offset of the stream + [SEP]`, all segment 0 (no
sentence pairs, no next-sentence objective: RoBERTa found NSP unhelpful, and one segment keeps
the sampler a single gather). Examples are drawn and masked on device from the batch key
(lmlab.data.mlm), so resuming reproduces every batch.

Loss: cross-entropy on the selected positions only (weighted mean over the batch), with label
smoothing / z-loss from `train`. Only the selected positions go through the MLM head: at most
round(rate * T) per row (lmlab.data.mlm.max_selected), so the T x V logits are never formed.

Held-out metrics: the validation split cut into consecutive [CLS] text [SEP] examples, masked once
with a fixed key (the same positions and replacements at every evaluation and in every run):
`val_loss` (mean NLL of the masked tokens), `val_ppl`, `mlm_accuracy` (argmax == original token),
`val_tokens` (masked tokens scored).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lmlab import flops
from lmlab.config import ConfigError
from lmlab.data.mlm import heldout_examples, mask_tokens, max_selected, sample_examples, tokenizer_special_ids
from lmlab.data.prepare import prepare, prepare_heldout
from lmlab.eval import batching
from lmlab.tasks.base import LossOutput, Task, TaskData
from lmlab.train.losses import token_cross_entropy

BERT_TOKENS = ("[CLS]", "[SEP]", "[MASK]")
EVAL_MASK_SEED = 20240611  # fixed: every evaluation of every run scores the same masked positions


@dataclass(frozen=True)
class BertIds:
    cls: int
    sep: int
    mask: int
    special: tuple[int, ...]   # never selected, never a random replacement
    vocab_size: int


def bert_ids(tokenizer) -> BertIds:
    missing = [t for t in BERT_TOKENS if t not in tokenizer.special_ids]
    if missing:
        raise ConfigError(f"config key 'tokenizer.special_tokens' must contain {', '.join(BERT_TOKENS)} for the "
                          f"bert family (missing {', '.join(missing)})")
    s = tokenizer.special_ids
    return BertIds(s["[CLS]"], s["[SEP]"], s["[MASK]"], tuple(tokenizer_special_ids(tokenizer)),
                   tokenizer.vocab_size)


def selected_positions(weights_BT: jax.Array, n: int) -> jax.Array:
    """[B, n] indices holding every weight-1 position of each row (given at most n per row)."""
    return jax.lax.top_k(weights_BT, n)[1]


def mlm_token_losses(model, batch: dict, dropout_key=None, *, max_positions: int | None = None,
                     label_smoothing: float = 0.0, z_loss: float = 0.0):
    """(objective_BP, nll_BP, logits_BPV, targets_BP, weights_BP) at the scored positions.

    With max_positions, only the top-weighted max_positions positions of each row go through the
    MLM head (exact as long as no row selects more); None scores all T positions.
    """
    inputs_BT, targets_BT, weights_BT = batch["inputs"], batch["targets"], batch["weights"]
    hidden_BTD = model.encode(inputs_BT, segment_ids_BT=batch.get("segment_ids"), dropout_key=dropout_key)
    if max_positions is not None:
        pos_BP = selected_positions(weights_BT, max_positions)
        hidden_BTD = jnp.take_along_axis(hidden_BTD, pos_BP[..., None], axis=1)
        targets_BT = jnp.take_along_axis(targets_BT, pos_BP, axis=1)
        weights_BT = jnp.take_along_axis(weights_BT, pos_BP, axis=1)
    logits_BPV = model.mlm_logits(hidden_BTD)
    objective_BP, nll_BP = token_cross_entropy(logits_BPV, targets_BT, label_smoothing=label_smoothing,
                                               z_loss=z_loss)
    return objective_BP, nll_BP, logits_BPV, targets_BT, weights_BT


def mlm_loss(model, batch: dict, dropout_key=None, **kwargs) -> LossOutput:
    """Weighted means over the selected positions of the whole batch: objective, nll, accuracy."""
    objective_BP, nll_BP, logits_BPV, targets_BP, weights_BP = mlm_token_losses(model, batch, dropout_key, **kwargs)
    n_selected = weights_BP.sum()
    count = jnp.maximum(n_selected, 1.0)
    correct_BP = (jnp.argmax(logits_BPV, -1) == targets_BP).astype(jnp.float32)
    return LossOutput((objective_BP * weights_BP).sum() / count, n_selected,
                      {"nll": (nll_BP * weights_BP).sum() / count, "accuracy": (correct_BP * weights_BP).sum() / count})


class MLMTask(Task):
    families = ("bert",)

    def __init__(self, config):
        super().__init__(config)
        self.ids: BertIds | None = None  # set by prepare() from the tokenizer

    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        data = prepare(self.config, run_dir)
        self.ids = bert_ids(data.tokenizer)
        if len(data.train_tokens) < self.config.data.seq_len - 1:
            raise ValueError(f"training split has {len(data.train_tokens)} tokens, fewer than data.seq_len - 1")
        return TaskData(data.tokenizer, {"tokens": np.asarray(data.train_tokens)}, np.asarray(data.val_tokens))

    def prepare_heldout(self, run_dir: pathlib.Path) -> TaskData:
        data = prepare_heldout(self.config, run_dir)
        self.ids = bert_ids(data.tokenizer)
        return TaskData(data.tokenizer, {}, np.asarray(data.val_tokens))

    def synthetic_train_arrays(self, vocab_size, key):
        if self.ids is None:  # `lmlab bench train` never prepares data: stand-in ids after pad/bos/eos/unk
            self.ids = BertIds(4, 5, 6, (0, 1, 2, 3, 4, 5, 6), vocab_size)
        return super().synthetic_train_arrays(vocab_size, key)

    def mask(self, examples_BT, key):
        return mask_tokens(examples_BT, key, vocab_size=self.ids.vocab_size, mask_id=self.ids.mask,
                           special_ids=self.ids.special, rate=self.config.data.mlm_rate)

    def sample_batch(self, train_arrays, key):
        d = self.config.data
        k_window, k_mask = jax.random.split(key)
        examples_BT = sample_examples(train_arrays["tokens"], k_window, d.batch_size, d.seq_len,
                                      self.ids.cls, self.ids.sep)
        inputs_BT, targets_BT, weights_BT = self.mask(examples_BT, k_mask)
        return {"inputs": inputs_BT, "targets": targets_BT, "weights": weights_BT}

    def loss(self, model, batch, dropout_key, frozen):
        t = self.config.train
        return mlm_loss(model, batch, dropout_key, max_positions=max_selected(batch["inputs"].shape[1],
                                                                              self.config.data.mlm_rate),
                        label_smoothing=t.label_smoothing, z_loss=t.z_loss)

    def flops_per_token(self, vocab_size: int) -> float:
        """The MLM head (dense d x d, decoder d x V) runs on the max_selected positions of a row only."""
        m, d = self.config.model, self.config.data
        head_rows = max_selected(d.seq_len, d.mlm_rate)
        return flops.encoder_flops_per_token(m, d.seq_len, 6 * (m.d_model ** 2 + m.d_model * vocab_size) * head_rows)

    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        from flax import nnx

        c = self.config
        n_pos = max_selected(c.data.seq_len, c.data.mlm_rate)
        examples = heldout_examples(data.val, c.data.seq_len, self.ids.cls, self.ids.sep)
        masked = jax.device_get(jax.jit(self.mask)(examples, jax.random.key(EVAL_MASK_SEED)))
        full_set = tuple(np.asarray(a) for a in masked)
        n_periodic = c.train.eval_batches * c.data.batch_size
        periodic_set = full_set
        if 0 < n_periodic < len(examples):
            keep = np.linspace(0, len(examples) - 1, n_periodic).round().astype(int)
            periodic_set = tuple(a[keep] for a in full_set)

        @batching.data_parallel_eval  # split over the mesh's batch axes, sums over the global batch
        def eval_step(params, inputs_BT, targets_BT, weights_BT):
            model = nnx.merge(graphdef, nnx.State(params))
            batch = {"inputs": inputs_BT, "targets": targets_BT, "weights": weights_BT}
            _, nll_BP, logits_BPV, targets_BP, weights_BP = mlm_token_losses(model, batch, max_positions=n_pos)
            correct_BP = (jnp.argmax(logits_BPV, -1) == targets_BP).astype(jnp.float32)
            return (nll_BP * weights_BP).sum(), (correct_BP * weights_BP).sum()

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            arrays = full_set if full else periodic_set
            # One compiled shape: weight-0 rows fill the last batch (and split it over the mesh).
            nll, correct = batching.eval_sums(eval_step, params, arrays, batch_size or c.data.batch_size)
            n = float(arrays[2].sum())
            loss = nll / max(n, 1.0)
            accuracy = correct / max(n, 1.0)
            return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "mlm_accuracy": accuracy,
                    "val_tokens": int(n), "eval/nll": loss, "eval/accuracy": accuracy}

        return evaluator
