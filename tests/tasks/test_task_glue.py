"""Task glue against naive NumPy references, on stand-in models (no training)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmlab import config as config_lib
from lmlab.tasks.classify import ClassifyTask, balanced_heldout, split_documents
from lmlab.tasks.lm import lm_loss
from lmlab.tasks.mlm import BertIds
from lmlab.tasks.translation import detokenize

V = 11
TABLE = np.random.default_rng(0).normal(size=(V, V)).astype(np.float32)


class TableLM:
    """logits at position t = TABLE[token t]: a bigram model whose loss NumPy can recompute."""

    def __call__(self, tokens_BT, dropout_key=None):
        return jnp.asarray(TABLE)[tokens_BT], None


def test_lm_loss_scores_each_next_token_with_optax_label_smoothing():
    windows = np.random.default_rng(1).integers(0, V, (3, 9)).astype(np.int32)
    logits = TABLE[windows[:, :-1]].astype(np.float64)                    # [3, 8, V], input t
    targets = windows[:, 1:]                                              # token t + 1
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, targets[..., None], -1).mean()
    smoothed = np.asarray(optax.smooth_labels(jax.nn.one_hot(targets, V), 0.1), np.float64)
    lse = np.log(np.exp(logits).sum(-1))
    expected = -(smoothed * log_p).sum(-1).mean() + 1e-3 * (lse ** 2).mean()
    objective, n, metrics = lm_loss(TableLM(), jnp.asarray(windows), None, label_smoothing=0.1, z_loss=1e-3)
    got_nll = metrics["nll"]
    assert float(n) == 3 * 8
    assert float(got_nll) == pytest.approx(nll, rel=1e-5)
    assert float(objective) == pytest.approx(expected, rel=1e-5)


def test_classification_windows_come_from_their_own_class_training_part():
    # Three documents with disjoint token ranges: a token tells its class, and the held-out tail
    # (last 25%) uses ids no training window may contain.
    docs = [np.arange(100, 180), np.arange(200, 300), np.arange(300, 360)]
    train, starts, lengths, val_docs = split_documents(docs, 0.25, 6)
    np.testing.assert_array_equal(lengths, [60, 75, 45])
    config = config_lib.load("configs/bert_classify_shakespeare.py", [
        "--config.data.seq_len=8", "--config.data.batch_size=64", "--config.model.n_classes=3",
        "--config.data.classify_docs=a,b,c"])
    task = ClassifyTask(config)
    task.ids = BertIds(4, 5, 6, (0, 1, 2, 3, 4, 5, 6), 400)
    arrays = {"tokens": jnp.asarray(train), "starts": jnp.asarray(starts), "lengths": jnp.asarray(lengths)}
    batch = jax.jit(task.sample_batch)(arrays, jax.random.key(0))
    inputs, labels = np.asarray(batch["inputs"]), np.asarray(batch["labels"])
    assert set(labels.tolist()) == {0, 1, 2}
    assert (inputs[:, 0] == 4).all() and (inputs[:, -1] == 5).all()  # [CLS] text [SEP]
    text = inputs[:, 1:-1]
    for k, doc in enumerate(docs):
        train_ids = doc[: lengths[k]]
        assert np.isin(text[labels == k], train_ids).all()
        assert (np.diff(text[labels == k], axis=1) == 1).all()  # consecutive tokens of one document
    # Held out: the same number of full windows per class, each from its class's tail only.
    examples, val_labels = balanced_heldout(val_docs, 8, 4, 5)
    assert np.bincount(val_labels).tolist() == [2, 2, 2]  # min(20 // 6, 25 // 6, 15 // 6) = 2
    for k, doc in enumerate(docs):
        assert np.isin(examples[val_labels == k][:, 1:-1], doc[lengths[k]:]).all()


class Ids:
    eos_id = 2

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_translations_are_cut_at_the_first_eos():
    assert detokenize(Ids(), [7, 8, 2, 9, 2, 0]) == "7 8"
    assert detokenize(Ids(), np.array([7, 8, 9])) == "7 8 9"  # no eos: the whole row
    assert detokenize(Ids(), [2, 7]) == ""
