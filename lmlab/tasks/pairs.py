"""What the preference tasks share (task "dpo", task "reward"): pairs of sequences as rows.

A preference set (lmlab.data.preferences: a JSONL file named by data.corpus) becomes two arrays of
rows of data.seq_len + 1 tokens, chosen and rejected, right-padded with 0, with weight 1 on the
completion tokens. A batch is B pairs: the B chosen rows, then the B rejected rows, so one forward
pass scores both. A sequence longer than a row is cut at the end, and the count is logged.

Subclasses give `pair_terms(model, batch, dropout_key, frozen) -> {name: [B]}` with a "loss"
entry; training minimises its mean and logs the means of the others, held-out evaluation reports
all of them as eval/<name> (val_loss is eval/loss).
"""

from __future__ import annotations

import abc
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab import flops, sharding
from lmlab.config import ConfigError
from lmlab.data.preferences import encode_completion, read_pairs, split_pairs
from lmlab.data.prepare import copy_init_tokenizers
from lmlab.eval import batching
from lmlab.files import atomic_write
from lmlab.tasks.base import LossOutput, Task, TaskData
from lmlab.tokenizers import load_tokenizer
from lmlab.train.losses import token_cross_entropy

log = logging.getLogger("lmlab")

DATA_FILE = "pairs.npz"
SIDES = ("chosen", "rejected")


def sequence_logps(logits_BTV, tokens_BL, weights_BL) -> jax.Array:
    """[B] summed log-probabilities of the weighted tokens (targets tokens[:, 1:])."""
    _, nll_BT = token_cross_entropy(logits_BTV, tokens_BL[:, 1:])
    return -(nll_BT * weights_BL[:, 1:]).sum(-1)


def rows_of(sequences, row_len: int) -> tuple[dict, int]:
    """One sequence per row (no packing: pair i is row i on both sides), cut at the row length."""
    tokens = np.zeros((len(sequences), row_len), np.int32)
    weights = np.zeros((len(sequences), row_len), np.float32)
    n_cut = 0
    for i, (ids, w) in enumerate(sequences):
        n_cut += len(ids) > row_len
        tokens[i, :min(len(ids), row_len)] = ids[:row_len]
        weights[i, :min(len(ids), row_len)] = w[:row_len]
    return {"tokens": tokens, "weights": weights, "lengths": np.minimum([len(s[0]) for s in sequences], row_len)}, n_cut


class PairTask(Task):
    families = ("gpt",)

    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        run_dir = pathlib.Path(run_dir)
        path = run_dir / "data" / DATA_FILE
        copy_init_tokenizers(self.config, run_dir)
        if not (run_dir / "tokenizer" / "tokenizer.json").exists():
            raise ConfigError(f"task {self.config.task} needs train.init_from (the model to start from and its "
                              "tokenizer), e.g. an sft run")
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        if not path.exists():
            arrays = self._encode(tokenizer, read_pairs(self.config.data.corpus))
            with atomic_write(path) as f:
                np.savez(f, **arrays)
        with np.load(path) as f:
            arrays = dict(f)
        split = {s: {k[len(s) + 1:]: v for k, v in arrays.items() if k.startswith(s + "_")} for s in ("train", "val")}
        return TaskData(tokenizer, split["train"], split["val"])

    def _encode(self, tokenizer, pairs) -> dict:
        arrays = {}
        row_len = self.config.data.seq_len + 1
        for split, chosen in zip(("train", "val"), split_pairs(pairs)):
            for side in SIDES:
                rows, n_cut = rows_of([encode_completion(tokenizer, p.prompt, getattr(p, side)) for p in chosen],
                                      row_len)
                arrays.update({f"{split}_{side}_{k}": v for k, v in rows.items()})
                if n_cut:
                    log.info("%s %s: %d of %d sequences longer than %d tokens were cut", split, side, n_cut,
                             len(chosen), row_len)
            log.info("preference pairs, %s: %d", split, len(chosen))
        return arrays

    def sample_batch(self, train_arrays, key):
        n = train_arrays["chosen_tokens"].shape[0]
        pairs_B = jax.random.randint(key, (self.config.data.batch_size,), 0, n)
        return {k: jnp.concatenate([train_arrays[f"chosen_{k}"][pairs_B], train_arrays[f"rejected_{k}"][pairs_B]])
                for k in ("tokens", "weights", "lengths")}

    def synthetic_train_arrays(self, vocab_size: int, key: jax.Array) -> dict:
        n, L = 256, self.config.data.seq_len + 1
        arrays = {}
        for i, side in enumerate(SIDES):
            arrays[f"{side}_tokens"] = np.asarray(jax.random.randint(jax.random.fold_in(key, i), (n, L), 0, vocab_size),
                                                  np.int32)
            arrays[f"{side}_weights"] = (np.arange(L) >= L // 2).astype(np.float32)[None].repeat(n, 0)
            arrays[f"{side}_lengths"] = np.full(n, L, np.int32)
        return arrays

    def tokens_per_batch(self) -> int:
        return 2 * self.config.data.batch_size * self.config.data.seq_len

    def flops_per_token(self, vocab_size: int) -> float:
        return flops.flops_per_token(self.config.model, vocab_size, self.config.data.seq_len)

    @abc.abstractmethod
    def pair_terms(self, model, batch, dropout_key, frozen) -> dict[str, jax.Array]:
        """{name: [B] per-pair values}, with "loss"."""

    def loss(self, model, batch, dropout_key, frozen) -> LossOutput:
        terms = self.pair_terms(model, batch, dropout_key, frozen)
        n_pairs = batch["tokens"].shape[0] // 2
        metrics = {name: value_B.mean() for name, value_B in terms.items() if name != "loss"}
        return LossOutput(terms["loss"].mean(), jnp.asarray(n_pairs, jnp.float32), metrics)

    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        c = self.config
        frozen = frozen or {}
        frozen_graphdefs = {name: model.graphdef for name, model in frozen.items()}

        @batching.data_parallel_eval  # split over the mesh's batch axes, sums over the global batch
        def eval_step(trees, tokens_2BL, weights_2BL, lengths_2B, valid_B):
            model = nnx.merge(graphdef, nnx.State(trees["model"]))
            models = {name: nnx.merge(g, nnx.State(trees[name])) for name, g in frozen_graphdefs.items()}
            batch = {"tokens": tokens_2BL, "weights": weights_2BL, "lengths": lengths_2B}
            terms = self.pair_terms(model, batch, None, models)
            return {name: (value_B * valid_B).sum() for name, value_B in terms.items()}

        val = data.val
        n_periodic = c.train.eval_batches * c.data.batch_size
        n = len(val["chosen_tokens"])
        keep = np.arange(n) if not 0 < n_periodic < n else np.linspace(0, n - 1, n_periodic).round().astype(int)

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            rows = np.arange(n) if full else keep
            trees = {"model": params, **{name: model.params for name, model in frozen.items()}}
            bs = batching.eval_batch_size(batch_size or c.data.batch_size, sharding.mesh_of(params))
            totals: dict[str, float] = {}
            for start in range(0, len(rows), bs):
                idx = rows[start:start + bs]
                valid = np.zeros(bs, np.float32)
                valid[:len(idx)] = 1.0
                idx = np.concatenate([idx, np.zeros(bs - len(idx), int)])  # one compiled shape
                arrays = [np.concatenate([val[f"chosen_{k}"][idx], val[f"rejected_{k}"][idx]])
                          for k in ("tokens", "weights", "lengths")]
                for name, value in jax.device_get(eval_step(trees, *arrays, valid)).items():
                    totals[name] = totals.get(name, 0.0) + float(value)
            means = {f"eval/{name}": total / len(rows) for name, total in totals.items()}
            return {"val_loss": means["eval/loss"], "val_pairs": int(len(rows)), **means}

        return evaluator

