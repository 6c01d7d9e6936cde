"""Next-token prediction (decoder-only LMs): random windows of the token stream, shifted targets."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab import flops, sharding
from lmlab.compress import topk_cache
from lmlab.config import ConfigError
from lmlab.compress.distill import TeacherTopK, cached_distill_objective, distill_objective
from lmlab.data.host_loader import choose_loader
from lmlab.data.mixture import mixture_weights
from lmlab.data.mixture_windows import mixture_train_arrays, sample_mixture_windows
from lmlab.data.prepare import prepare, prepare_heldout, token_paths
from lmlab.data.token_file import read_token_metadata
from lmlab.eval import batching
from lmlab.eval.lm import eval_windows, evaluate
from lmlab.eval.mixture import mixture_evaluator
from lmlab.tasks.base import LossOutput, Task, TaskData
from lmlab.train.losses import token_cross_entropy


def window_starts(n_tokens: int, key: jax.Array, batch: int, seq_len: int) -> jax.Array:
    """[batch] uniform random offsets of windows of seq_len + 1 tokens in a stream of n_tokens."""
    return jax.random.randint(key, (batch,), 0, n_tokens - seq_len)


def sample_windows(tokens_N: jax.Array, key: jax.Array, batch: int, seq_len: int) -> jax.Array:
    """[batch, seq_len + 1] windows at uniform random offsets (inputs and shifted targets)."""
    starts_B = window_starts(tokens_N.shape[0], key, batch, seq_len)
    return tokens_N[starts_B[:, None] + jnp.arange(seq_len + 1)].astype(jnp.int32)


def sample_cached_windows(train_arrays: dict, key: jax.Array, batch: int, seq_len: int) -> dict:
    """`sample_windows`' windows with the teacher's stored top-k for them (lmlab.compress.topk_cache):
    {"windows": [B, seq_len + 1], "teacher": TeacherTopK}. Each window's row in the cache is found
    by its start offset (the cache holds every start the run draws: checked when it is loaded)."""
    tokens_N = train_arrays["tokens"]
    starts_B = window_starts(tokens_N.shape[0], key, batch, seq_len)
    rows_B = jnp.searchsorted(train_arrays["cache_starts"], starts_B)
    teacher = TeacherTopK(train_arrays["cache_logp"][rows_B], train_arrays["cache_ids"][rows_B],
                          train_arrays["cache_nll"][rows_B])
    return {"windows": tokens_N[starts_B[:, None] + jnp.arange(seq_len + 1)].astype(jnp.int32), "teacher": teacher}


def next_token_loss(model, inputs_BT, targets_BT, dropout_key, *, weights_BT=None, segment_ids_BT=None,
                    label_smoothing=0.0, z_loss=0.0, teacher=None, alpha=0.0, temperature=1.0,
                    cached_teacher: TeacherTopK | None = None) -> LossOutput:
    """Next-token loss over the targets (all of them, or those of weight 1 in `weights_BT`); with
    a frozen `teacher` model, or a teacher's stored top-k for these targets (`cached_teacher`),
    mixed with the distillation term (lmlab.compress.distill) at weight `alpha` and `temperature`,
    masked the same way. `segment_ids_BT`: packed rows (lmlab.data.packing)."""
    segments = {} if segment_ids_BT is None else {"segment_ids_BT": segment_ids_BT}
    logits_BTV, _ = model(inputs_BT, dropout_key=dropout_key, **segments)
    objective_BT, nll_BT = token_cross_entropy(logits_BTV, targets_BT, label_smoothing=label_smoothing, z_loss=z_loss)
    per_token = {"nll": nll_BT}
    if teacher is not None:
        teacher_logits_BTV, _ = teacher(inputs_BT, **segments)
        objective_BT, distill_metrics = distill_objective(objective_BT, logits_BTV, teacher_logits_BTV, targets_BT,
                                                          alpha=alpha, temperature=temperature)
        per_token.update(distill_metrics, **{"distill/ce": nll_BT})
    elif cached_teacher is not None:
        objective_BT, distill_metrics = cached_distill_objective(objective_BT, logits_BTV, cached_teacher,
                                                                 alpha=alpha, temperature=temperature)
        per_token.update(distill_metrics, **{"distill/ce": nll_BT})
    if weights_BT is None:  # every target: plain means (the pretraining path, bit for bit as before)
        metrics = {name: value_BT.mean() for name, value_BT in per_token.items()}
        return LossOutput(objective_BT.mean(), jnp.asarray(nll_BT.size, jnp.float32), metrics)
    n_targets = weights_BT.sum()
    count = jnp.maximum(n_targets, 1.0)
    metrics = {name: (value_BT * weights_BT).sum() / count for name, value_BT in per_token.items()}
    return LossOutput((objective_BT * weights_BT).sum() / count, n_targets, metrics)


def lm_loss(model, windows_BT1, dropout_key, **kwargs) -> LossOutput:
    """`next_token_loss` of windows of the token stream: inputs and their shifted targets."""
    return next_token_loss(model, windows_BT1[:, :-1], windows_BT1[:, 1:], dropout_key, **kwargs)


def distill_settings(config, frozen, cached_teacher: TeacherTopK | None = None) -> dict:
    """The keyword arguments of `next_token_loss` that add a frozen teacher, or a cached one, if the
    task has one."""
    if "teacher" in frozen:
        return dict(teacher=frozen["teacher"], alpha=config.distill.alpha, temperature=config.distill.temperature)
    if cached_teacher is not None:
        return dict(cached_teacher=cached_teacher, alpha=config.distill.alpha, temperature=config.distill.temperature)
    return {}


def teacher_source(config) -> dict[str, str]:
    teacher = config.distill.teacher if "distill" in config else ""
    return {"teacher": teacher} if teacher else {}


def make_lm_eval_step(graphdef, teacher_graphdef=None, *, temperature: float = 1.0):
    """Jitted eval({"model": params[, "teacher": params]}, windows_BT1, weights_BT) -> sums of the
    weighted targets' nll (and, with a teacher, of distill/kl and distill/teacher_nll), run
    data-parallel on the mesh the parameters live on (lmlab.eval.batching.data_parallel_eval)."""
    def eval_step(params, windows_BT1, weights_BT):
        inputs_BT, targets_BT = windows_BT1[:, :-1], windows_BT1[:, 1:]
        logits_BTV, _ = nnx.merge(graphdef, nnx.State(params["model"]))(inputs_BT)
        _, nll_BT = token_cross_entropy(logits_BTV, targets_BT)
        sums = {"nll": (nll_BT * weights_BT).sum()}
        if teacher_graphdef is not None:
            teacher_logits_BTV, _ = nnx.merge(teacher_graphdef, nnx.State(params["teacher"]))(inputs_BT)
            _, distill_metrics = distill_objective(nll_BT, logits_BTV, teacher_logits_BTV, targets_BT, alpha=1.0,
                                                   temperature=temperature)
            sums.update({name: (value_BT * weights_BT).sum() for name, value_BT in distill_metrics.items()},
                        **{"distill/ce": sums["nll"]})
        return sums

    return batching.data_parallel_eval(eval_step)


class LMTask(Task):
    families = ("gpt",)

    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        if self.config.distill.get("cache", ""):  # before its tokenizer is taken: is it a cache at all?
            topk_cache.read_manifest(self.config.distill.cache)
        data = prepare(self.config, run_dir, min_train_tokens=self.config.data.seq_len + 2)
        sources = data.train_tokens if isinstance(data.train_tokens, dict) else {"": data.train_tokens}
        train_bytes = sum(tokens.nbytes for tokens in sources.values())
        if choose_loader(self.config.data.get("loader", "auto"), train_bytes) == "host":
            if self.config.distill.get("cache", ""):  # its top-k rows are looked up on device by window start
                raise ConfigError("config key 'distill.cache' needs the on-device loader: set data.loader=device")
            # The memory maps themselves: windows are read from them on the host (lmlab.train.inputs).
            return TaskData(data.tokenizer, {}, data.val_tokens, extra={"host_sources": list(sources.values())})
        if isinstance(data.train_tokens, dict):  # a mixture (data.mixture): sources end to end
            return TaskData(data.tokenizer, mixture_train_arrays(data.train_tokens), data.val_tokens)
        if len(data.train_tokens) <= self.config.data.seq_len + 1:
            raise ValueError(f"training split has {len(data.train_tokens)} tokens, fewer than data.seq_len + 2")
        train = {"tokens": np.asarray(data.train_tokens)}
        if self.config.distill.get("cache", ""):  # the teacher's top-k for every window this run draws
            train_sha256 = read_token_metadata(token_paths(run_dir / "data", "")[0])["sha256"]
            train.update(topk_cache.load_train_arrays(self.config.distill.cache, self.config, run_dir, train_sha256))
        return TaskData(data.tokenizer, train, data.val_tokens)

    def prepare_heldout(self, run_dir: pathlib.Path) -> TaskData:
        data = prepare_heldout(self.config, run_dir)
        return TaskData(data.tokenizer, {}, data.val_tokens)

    def frozen_sources(self) -> dict[str, str]:
        return teacher_source(self.config)

    def sample_batch(self, train_arrays, key):
        d = self.config.data
        if "source_starts" in train_arrays:  # a mixture's (mixture_train_arrays)
            return sample_mixture_windows(train_arrays, key, mixture_weights(d.mixture), d.batch_size, d.seq_len)
        if "cache_starts" in train_arrays:  # distill.cache: windows and the teacher's top-k for them
            return sample_cached_windows(train_arrays, key, d.batch_size, d.seq_len)
        return sample_windows(train_arrays["tokens"], key, d.batch_size, d.seq_len)

    def loss(self, model, batch, dropout_key, frozen):
        t = self.config.train
        cached = batch.get("teacher") if isinstance(batch, dict) else None
        windows_BT1 = batch["windows"] if isinstance(batch, dict) else batch
        return lm_loss(model, windows_BT1, dropout_key, label_smoothing=t.label_smoothing, z_loss=t.z_loss,
                       **distill_settings(self.config, frozen, cached))

    def flops_per_token(self, vocab_size: int) -> float:
        return flops.flops_per_token(self.config.model, vocab_size, self.config.data.seq_len)

    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        c = self.config
        if isinstance(data.val, dict):  # a mixture: each source's held-out split, and their weighted mean
            weights = dict(zip(data.val, mixture_weights(c.data.mixture)))
            return mixture_evaluator({label: self.make_evaluator(graphdef, dataclasses.replace(data, val=tokens), frozen)
                                      for label, tokens in data.val.items()}, weights)
        teacher = (frozen or {}).get("teacher")
        eval_step = make_lm_eval_step(graphdef, teacher and teacher.graphdef,
                                      temperature=c.distill.temperature if teacher else 1.0)
        byte_lengths = data.tokenizer.token_byte_lengths()
        periodic = eval_windows(data.val, c.data.seq_len, c.train.eval_batches * c.data.batch_size)

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            windows, weights = eval_windows(data.val, c.data.seq_len) if full else periodic
            # Batches split evenly over the mesh's batch axes; weight-0 windows fill the last one.
            bs = batching.eval_batch_size(batch_size or c.data.batch_size, sharding.mesh_of(params))
            trees = {"model": params, **({"teacher": teacher.params} if teacher else {})}
            return evaluate(eval_step, trees, windows, weights, byte_lengths, bs)

        return evaluator
