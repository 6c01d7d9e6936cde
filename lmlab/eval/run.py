"""Held-out metrics of a loaded run, at its training length or another one (`lmlab eval --seq-len`),
on its own corpus or on another one's held-out split (`lmlab eval --corpus`).

At another length the held-out split is cut into non-overlapping windows of that many tokens (the
"nonoverlapping" evaluation of Press et al. 2022): a model that extrapolates sees more context per
prediction and scores better, one that does not scores worse. Absolute positions stop where their
table does (model.max_len; the learned table is trained only up to data.seq_len): evaluating past it
is refused.

On another corpus the held-out documents are the ones every run on that corpus holds out
(lmlab.data.corpora's split, through this run's data.* filters), tokenized in memory with the
run's own tokenizer (the run directory is only read): bits per byte then compare models whose
tokenizers differ, loss and perplexity are per token of this run's tokenizer.
"""

from __future__ import annotations

import pathlib

from flax import nnx

from lmlab.config import ConfigError, apply_overrides
from lmlab.data.prepare import heldout_ids
from lmlab.tasks import get_task
from lmlab.tasks.base import TaskData

ABSOLUTE = ("learned", "sinusoidal")


def max_eval_len(config) -> int | None:
    """The longest window a run's positions allow, or None (relative positions: no limit)."""
    return config.model.max_len if config.model.positions in ABSOLUTE else None


def evaluate_run(run, *, seq_len: int = 0, batch_size: int = 0, max_batches: int = 0, corpus: str = "") -> dict:
    """The end-of-run evaluation (every held-out token once) of a `lmlab.runs.LoadedRun`, in
    windows of `seq_len` tokens (0: the run's data.seq_len; an lm run's result names its "seq_len"),
    or on `max_batches` evenly spaced batches only (the periodic evaluation's subset; reported as
    "max_batches"). Only the held-out split is tokenized. With `corpus` (a registered name or a path,
    as data.corpus takes), that corpus's held-out split instead; the result names it ("corpus")."""
    config = run.config
    if corpus and config.task != "lm":
        raise ConfigError(f"--corpus applies to language models (task lm); {run.run_dir} is a '{config.task}' run")
    overrides = []
    if seq_len:
        if config.task != "lm":
            raise ConfigError(f"--seq-len applies to language models (task lm); {run.run_dir} is a "
                              f"'{config.task}' run")
        limit = max_eval_len(config)
        if limit is not None and seq_len > limit:
            raise ConfigError(f"--seq-len {seq_len} exceeds model.max_len {limit}: this run's "
                              f"{config.model.positions} positions have no table past it")
        overrides.append(f"data.seq_len={seq_len}")
    if max_batches:
        if config.task == "translate":
            raise ConfigError("--max-batches: a translation run's dev and test splits are evaluated whole")
        overrides += [f"train.eval_batches={max_batches}"] + ([f"data.batch_size={batch_size}"] if batch_size else [])
    config = apply_overrides(config, overrides)
    graphdef, _ = nnx.split(run.model)
    task = get_task(config)
    data = _corpus_heldout(run, corpus) if corpus else task.prepare_heldout(run.run_dir)
    evaluator = task.make_evaluator(graphdef, data)
    result = evaluator(run.params, full=not max_batches, batch_size=batch_size)
    if config.task == "lm":
        result["seq_len"] = int(config.data.seq_len)
    if corpus:
        result["corpus"] = data.extra["corpus"]
    return {**result, **({"max_batches": max_batches} if max_batches else {})}


def _corpus_heldout(run, spec: str) -> TaskData:
    """The held-out split of corpus `spec` in the run's tokens, as an lm evaluator reads it."""
    ids, corpus = heldout_ids(spec, run.config.data, run.tokenizer, pathlib.Path(run.run_dir) / "tokenizer")
    return TaskData(run.tokenizer, {}, ids, extra={"corpus": corpus.name})
