"""Sequence classification with a BERT encoder (task "classify": family "bert", model.n_classes > 0).

The labelled data comes from the run's corpus: class k is document `data.classify_docs[k]` (e.g. a
play), and an example is a `[CLS] passage [SEP]` window of `data.seq_len - 2` tokens from it. Each
document is split by position: windows of the first (1 - classify_val_fraction) train, the rest
are held out (consecutive, non-overlapping windows). The held-out set keeps the same number of
windows per class (evenly spaced), so chance accuracy is 1 / n_classes.

Fine-tuning: `train.init_from=<BERT pretraining run>` starts the encoder and pooler from that run
(matching parameter paths); the classifier head starts fresh. The pretraining run's tokenizer is
copied into this run, so the ids mean the same. Without init_from the classifier trains from
scratch with its own tokenizer.

Metrics: `val_loss` (mean cross-entropy), `val_accuracy`, `val_examples`.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lmlab import flops
from lmlab.data.corpora import get_corpus
from lmlab.data.mlm import heldout_examples, wrap_cls_sep
from lmlab.data.prepare import copy_init_tokenizers
from lmlab.eval import batching
from lmlab.files import atomic_write
from lmlab.tasks.base import LossOutput, Task, TaskData
from lmlab.tasks.mlm import BertIds, bert_ids
from lmlab.tokenizers import load_tokenizer, train_tokenizer
from lmlab.train.losses import token_cross_entropy

log = logging.getLogger("lmlab")

DATA_FILE = "classify.npz"


def split_documents(token_docs: list[np.ndarray], val_fraction: float, window: int):
    """(train_tokens, starts_K, lengths_K, val_docs): each document's head trains, its tail is held out."""
    train_parts, val_docs = [], []
    for k, tokens in enumerate(token_docs):
        cut = int(round(len(tokens) * (1.0 - val_fraction)))
        if cut < window or len(tokens) - cut < window:
            raise ValueError(f"classification document {k} has {len(tokens)} tokens: too few for train and held-out "
                             f"windows of {window}")
        train_parts.append(tokens[:cut])
        val_docs.append(tokens[cut:])
    lengths = np.asarray([len(p) for p in train_parts], np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    return np.concatenate(train_parts).astype(np.int32), starts, lengths, val_docs


def balanced_heldout(val_docs, seq_len: int, cls_id: int, sep_id: int):
    """(examples [n, seq_len], labels [n]): the same number of full windows from every class."""
    L = seq_len - 2
    per_class = min(len(doc) // L for doc in val_docs)
    examples, labels = [], []
    for k, doc in enumerate(val_docs):
        windows = heldout_examples(doc[: (len(doc) // L) * L], seq_len, cls_id, sep_id)
        keep = np.linspace(0, len(windows) - 1, per_class).round().astype(int)
        examples.append(windows[keep])
        labels.append(np.full(per_class, k, np.int32))
    return np.concatenate(examples), np.concatenate(labels)


class ClassifyTask(Task):
    families = ("bert",)

    def __init__(self, config):
        super().__init__(config)
        self.ids = None  # set by prepare()

    def _tokenizer(self, run_dir: pathlib.Path, corpus):
        tok_dir = run_dir / "tokenizer"
        copy_init_tokenizers(self.config, run_dir)  # fine-tuning: the pretraining run's ids
        if not (tok_dir / "tokenizer.json").exists():
            t = self.config.tokenizer
            return train_tokenizer(t.kind, corpus.train_text, vocab_size=t.vocab_size,
                                   special_tokens=tuple(t.special_tokens), out_dir=tok_dir)
        return load_tokenizer(tok_dir)

    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        c = self.config
        run_dir = pathlib.Path(run_dir)
        path = run_dir / "data" / DATA_FILE
        if path.exists() and (run_dir / "tokenizer" / "tokenizer.json").exists():
            tokenizer = load_tokenizer(run_dir / "tokenizer")
            with np.load(path) as f:
                docs = [f[f"doc{k}"] for k in range(len(c.data.classify_docs))]
        else:
            corpus = get_corpus(c.data.corpus)
            by_name = dict(zip(corpus.train_names + corpus.val_names, corpus.train_docs + corpus.val_docs))
            unknown = [name for name in c.data.classify_docs if name not in by_name]
            if unknown:
                raise ValueError(f"data.classify_docs: {', '.join(unknown)} not in corpus {corpus.name} "
                                 f"(documents: {', '.join(sorted(by_name))})")
            tokenizer = self._tokenizer(run_dir, corpus)
            docs = [np.asarray(tokenizer.encode(by_name[name]), np.int32) for name in c.data.classify_docs]
            _save_npz(path, {f"doc{k}": d for k, d in enumerate(docs)})
            log.info("classification: %s", json.dumps(dict(zip(c.data.classify_docs, map(len, docs)))))
        self.ids = bert_ids(tokenizer)
        train_tokens, starts, lengths, val_docs = split_documents(docs, c.data.classify_val_fraction,
                                                                  c.data.seq_len - 2)
        examples, labels = balanced_heldout(val_docs, c.data.seq_len, self.ids.cls, self.ids.sep)
        train = {"tokens": train_tokens, "starts": starts, "lengths": lengths}
        return TaskData(tokenizer, train, {"examples": examples, "labels": labels})

    def synthetic_train_arrays(self, vocab_size, key):
        if self.ids is None:  # `lmlab bench train`: stand-in ids
            self.ids = BertIds(4, 5, 6, (0, 1, 2, 3, 4, 5, 6), vocab_size)
        arrays = super().synthetic_train_arrays(vocab_size, key)
        K, n = self.config.model.n_classes, arrays["tokens"].shape[0]
        lengths = np.full(K, n // K, np.int32)
        return {**arrays, "starts": np.arange(K, dtype=np.int32) * (n // K), "lengths": lengths}

    def sample_batch(self, train_arrays, key):
        """Class-balanced: a uniform class, then a uniform window inside its training part."""
        d = self.config.data
        L = d.seq_len - 2
        k_class, k_offset = jax.random.split(key)
        labels_B = jax.random.randint(k_class, (d.batch_size,), 0, self.config.model.n_classes)
        offsets_B = jax.random.randint(k_offset, (d.batch_size,), 0, train_arrays["lengths"][labels_B] - L + 1)
        starts_B = train_arrays["starts"][labels_B] + offsets_B
        windows_BL = train_arrays["tokens"][starts_B[:, None] + jnp.arange(L)]
        return {"inputs": wrap_cls_sep(windows_BL, self.ids.cls, self.ids.sep), "labels": labels_B}

    def loss(self, model, batch, dropout_key, frozen):
        t = self.config.train
        logits_BC, _ = model(batch["inputs"], dropout_key=dropout_key)
        objective_B1, nll_B1 = token_cross_entropy(logits_BC[:, None], batch["labels"][:, None],
                                                   label_smoothing=t.label_smoothing, z_loss=t.z_loss)
        correct_B = (jnp.argmax(logits_BC, -1) == batch["labels"]).astype(jnp.float32)
        return LossOutput(objective_B1.mean(), jnp.asarray(nll_B1.size, jnp.float32),
                          {"nll": nll_B1.mean(), "accuracy": correct_B.mean()})

    def flops_per_token(self, vocab_size: int) -> float:
        """The pooler (d x d) and classifier (d x n_classes) run once per row."""
        m = self.config.model
        return flops.encoder_flops_per_token(m, self.config.data.seq_len, 6 * (m.d_model ** 2 + m.d_model * m.n_classes))

    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        from flax import nnx

        c = self.config
        examples, labels = data.val["examples"], data.val["labels"]
        n_periodic = c.train.eval_batches * c.data.batch_size
        periodic = (examples, labels)
        if 0 < n_periodic < len(examples):
            keep = np.linspace(0, len(examples) - 1, n_periodic).round().astype(int)
            periodic = (examples[keep], labels[keep])

        @batching.data_parallel_eval  # split over the mesh's batch axes, sums over the global batch
        def eval_step(params, inputs_BT, labels_B, weights_B):
            model = nnx.merge(graphdef, nnx.State(params))
            logits_BC, _ = model(inputs_BT)
            _, nll_B1 = token_cross_entropy(logits_BC[:, None], labels_B[:, None])
            correct_B = (jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32)
            return (nll_B1[:, 0] * weights_B).sum(), (correct_B * weights_B).sum()

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            inputs, targets = (examples, labels) if full else periodic
            weights = np.ones(len(inputs), np.float32)
            # One compiled shape: weight-0 rows fill the last batch (and split it over the mesh).
            nll, correct = batching.eval_sums(eval_step, params, (inputs, targets, weights),
                                              batch_size or c.data.batch_size)
            n = float(weights.sum())
            return {"val_loss": nll / n, "val_accuracy": correct / n, "val_examples": int(n),
                    "eval/nll": nll / n, "eval/accuracy": correct / n}

        return evaluator


def _save_npz(path: pathlib.Path, arrays: dict) -> None:
    """An interrupted preparation never leaves a half-written file behind."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
