"""`lmlab distill cache`: run a teacher once over the training windows a student run will draw and
store its top-k log-probabilities (lmlab.compress.topk_cache), so distillation runs with
distill.cache train without the teacher.

The windows are the student's, reproduced rather than guessed: a run samples micro-batch i of step
s on device from the key lmlab.train.step.batch_key(rng, s * grad_accum + i), rng coming from the
config's seed, and the lm task draws its window starts from that key (lmlab.tasks.lm.window_starts).
Here the same two functions run for every position of train.steps, over the training tokens the
student would prepare (the student's corpus and filters, the teacher's tokenizer).
"""

from __future__ import annotations

import logging
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab import config as config_lib
from lmlab.compress import topk_cache
from lmlab.compress.distill import teacher_topk
from lmlab.data.prepare import prepare, token_paths
from lmlab.data.token_file import read_token_metadata
from lmlab.eval.run import max_eval_len
from lmlab.runs import load_run
from lmlab.tasks.lm import window_starts
from lmlab.train.frozen import fingerprint
from lmlab.train.state import initial_rng
from lmlab.train.step import batch_key

log = logging.getLogger("lmlab")

DTYPES = {"float16": np.float16, "float32": np.float32}


def training_starts(config, n_tokens: int) -> np.ndarray:
    """[U] the sorted distinct window starts a run of `config` draws over train.steps, from a
    training stream of n_tokens."""
    d, t = config.data, config.train
    rng = initial_rng(config.seed)
    positions = jnp.arange(t.steps * t.grad_accum)
    starts = jax.jit(jax.vmap(lambda p: window_starts(n_tokens, batch_key(rng, p), d.batch_size, d.seq_len)))(positions)
    return np.unique(np.asarray(starts)).astype(np.int32)


def teacher_outputs(run, tokens_N: np.ndarray, starts_U: np.ndarray, seq_len: int, top_k: int, batch: int,
                    dtype) -> dict[str, np.ndarray]:
    """The teacher's top-k (lmlab.compress.distill.teacher_topk) of each window, `batch` windows per call."""
    graphdef, state = nnx.split(run.model)

    @jax.jit
    def topk(state, windows_BT1):
        logits_BTV, _ = nnx.merge(graphdef, state)(windows_BT1[:, :-1])
        return teacher_topk(logits_BTV, windows_BT1[:, 1:], top_k)

    offsets = np.arange(seq_len + 1)
    parts = []
    for i in range(0, len(starts_U), batch):
        chunk = starts_U[i:i + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk))])  # one compiled shape
        out = jax.device_get(topk(state, tokens_N[padded[:, None] + offsets].astype(np.int32)))
        parts.append([x[:len(chunk)] for x in out])
    logp, ids, nll = (np.concatenate(xs) for xs in zip(*parts))
    return {"starts": starts_U, "logp": logp.astype(dtype), "ids": ids.astype(np.int32), "nll": nll.astype(np.float32)}


def check_out_dir(out_dir: pathlib.Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} already exists and is not empty; choose a new --out directory")


def build_cache(teacher_dir: str | pathlib.Path, out_dir: str | pathlib.Path, config, *, top_k: int,
                dtype: str = "float16") -> dict:
    """Writes the cache of `teacher_dir`'s top_k for the windows of a student run of `config` into
    `out_dir` (new or empty); returns its manifest. Refused before anything is written: a task or
    data the cache cannot serve, a top_k outside 1..vocabulary, a teacher that is not a run."""
    out_dir = pathlib.Path(out_dir)
    config = config_lib.validate(config_lib.apply_overrides(config, [f"distill.teacher={teacher_dir}",
                                                                     "distill.cache="]))
    if config.task != "lm" or config.data.get("mixture", ""):
        raise config_lib.ConfigError("a distillation cache serves task lm on one corpus (data.mixture empty); "
                                     f"this config has task={config.task}")
    check_out_dir(out_dir)
    run = load_run(teacher_dir)
    vocab, limit = run.tokenizer.vocab_size, max_eval_len(run.config)
    if not 1 <= top_k <= vocab:
        raise config_lib.ConfigError(f"--top-k must be in 1..{vocab} (the teacher's vocabulary); got {top_k}")
    if limit is not None and config.data.seq_len > limit:
        raise config_lib.ConfigError(f"the student's data.seq_len {config.data.seq_len} exceeds the teacher's "
                                     f"model.max_len {limit}: its {run.config.model.positions} positions stop there")
    with tempfile.TemporaryDirectory(prefix="lmlab-distill-cache-") as tmp:
        tmp = pathlib.Path(tmp)  # the student's training tokens, as its run would prepare them
        tokens_N = np.asarray(prepare(config, tmp, min_train_tokens=config.data.seq_len + 2).train_tokens)
        train_sha256 = read_token_metadata(token_paths(tmp / "data", "")[0])["sha256"]
        t0 = time.time()
        starts_U = training_starts(config, len(tokens_N))
        arrays = teacher_outputs(run, tokens_N, starts_U, config.data.seq_len, top_k, config.data.batch_size,
                                 DTYPES[dtype])
        log.info("teacher %s: top-%d of %d windows (%d steps) [%.1fs]", teacher_dir, top_k, len(starts_U),
                 config.train.steps, time.time() - t0)
        manifest = {**topk_cache.run_fields(config), "top_k": top_k, "dtype": dtype, "vocab_size": vocab,
                    "windows": int(len(starts_U)), "corpus": config.data.corpus, "train_tokens_sha256": train_sha256,
                    "teacher": {"run_dir": str(pathlib.Path(teacher_dir).resolve()), "step": int(run.step),
                                "fingerprint": fingerprint(run.params)}}
        topk_cache.write_cache(out_dir, manifest, arrays, tmp / "tokenizer")
    return manifest
