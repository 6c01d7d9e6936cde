"""The offline distillation cache on disk: a teacher's top-k log-probabilities for the training
windows of one student configuration (written by `lmlab distill cache`, lmlab.compress.distill_cache;
read by a run with distill.cache = DIR).

    DIR/manifest.json   teacher (run, step, fingerprint), top_k, dtype, the student's seed, steps,
                        batch_size, grad_accum, seq_len, vocab_size, the sha256 of its training tokens
    DIR/tokenizer/      the teacher's tokenizer: a student run takes it (as from distill.teacher)
    DIR/starts.npy      [U] int32, sorted: the start offset of each distinct training window
    DIR/logp.npy        [U, seq_len, top_k] the teacher's log-probabilities (float16 or float32)
    DIR/ids.npy         [U, seq_len, top_k] int32: their token ids, most likely first
    DIR/nll.npy         [U, seq_len] float32: the teacher's NLL of each target (logged, not trained on)

Windows are keyed by start offset rather than by step: a student's batch at any step is found by
its windows' starts (lmlab.tasks.lm.sample_cached_windows), the same offsets the sampler draws from
(seed, step), and a window drawn twice is stored once. The arrays go to the device with the
training tokens (replicated), so the cache must fit in device memory.

A cache fits a run only when every window that run draws is in it and means the same tokens: the
manifest's seed, batch_size, grad_accum and seq_len must equal the run's, train.steps must not exceed
its steps, and the run's training tokens and tokenizer must be the ones it was made from.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

from lmlab.config import ConfigError
from lmlab.data.prepare import same_files

MANIFEST = "manifest.json"
ARRAYS = ("starts", "logp", "ids", "nll")
TRAIN_ARRAY_PREFIX = "cache_"  # the names the arrays take in the task's training arrays
MATCHED = ("seed", "batch_size", "grad_accum", "seq_len")  # must equal the run's


def run_fields(config) -> dict:
    """What of a student's config fixes the windows it draws."""
    return {"seed": int(config.seed), "batch_size": int(config.data.batch_size),
            "grad_accum": int(config.train.grad_accum), "seq_len": int(config.data.seq_len),
            "steps": int(config.train.steps)}


def write_cache(out_dir: pathlib.Path, manifest: dict, arrays: dict[str, np.ndarray],
                tokenizer_dir: pathlib.Path) -> None:
    """Writes the cache into a sibling temporary directory, then renames it: a failure leaves nothing."""
    out_dir = pathlib.Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", arrays[name])
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():  # an empty directory (checked by the caller)
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(cache_dir: str | pathlib.Path) -> dict:
    path = pathlib.Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"distill.cache={cache_dir} is not a distillation cache (no {MANIFEST}); make one with "
                          "`lmlab distill cache TEACHER_RUN --out DIR`")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); make the cache again") from None


def check_fits(manifest: dict, config, cache_dir, run_dir: pathlib.Path, train_sha256: str) -> None:
    """Refuses, in one line naming every difference, a cache that does not hold this run's windows."""
    mine = run_fields(config)
    differ = [f"{key}={manifest.get(key)!r} (this run: {mine[key]!r})" for key in MATCHED
              if manifest.get(key) != mine[key]]
    if mine["steps"] > manifest.get("steps", 0):
        differ.append(f"steps={manifest.get('steps')!r} (this run: train.steps={mine['steps']}, beyond the cache)")
    if manifest.get("train_tokens_sha256") != train_sha256:
        differ.append("training tokens (another corpus, split, filter or tokenizer)")
    if not same_files(pathlib.Path(cache_dir) / "tokenizer", pathlib.Path(run_dir) / "tokenizer"):
        differ.append("tokenizer")
    if differ:
        raise ConfigError(f"distill.cache={cache_dir} was made for other training windows: {', '.join(differ)}; "
                          "make a cache with this run's config (lmlab distill cache ... --config CONFIG)")


def load_train_arrays(cache_dir: str | pathlib.Path, config, run_dir: pathlib.Path, train_sha256: str) -> dict:
    """The cache's arrays, as training arrays ("cache_starts", ...), once it is known to fit the run."""
    manifest = read_manifest(cache_dir)
    check_fits(manifest, config, cache_dir, run_dir, train_sha256)
    arrays = {}
    for name in ARRAYS:
        path = pathlib.Path(cache_dir) / f"{name}.npy"
        try:
            arrays[TRAIN_ARRAY_PREFIX + name] = np.load(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the cache's {name} ({e}); make the cache again") from None
    n, k = manifest["windows"], manifest["top_k"]
    want = {"starts": (n,), "logp": (n, config.data.seq_len, k), "ids": (n, config.data.seq_len, k),
            "nll": (n, config.data.seq_len)}
    for name, shape in want.items():
        if arrays[TRAIN_ARRAY_PREFIX + name].shape != shape:
            raise ValueError(f"{cache_dir}/{name}.npy has shape {arrays[TRAIN_ARRAY_PREFIX + name].shape}, its "
                             f"manifest says {shape}; the cache is damaged: make it again")
    return arrays
