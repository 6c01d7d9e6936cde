"""Held-out language-model metrics: loss, perplexity and bits per UTF-8 byte.

Bits per byte divides the summed negative log-likelihood (in bits) by the number of UTF-8 bytes the
scored tokens decode to, so runs with different tokenizers compare on the same scale. Special
tokens (the end-of-document separator between plays) decode to no bytes, but their NLL still
counts: predicting where a document ends is part of modelling the text.
"""

from __future__ import annotations

import math

import numpy as np

from lmlab.eval import progress


def eval_windows(tokens_N: np.ndarray, seq_len: int, max_windows: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping [n, seq_len + 1] windows covering every token once as a target.

    Returns (windows, weights [n, seq_len]); the last window is padded with weight-0 targets.
    With max_windows > 0, an evenly spaced fixed subset is kept (same windows at every eval).
    """
    tokens_N = np.asarray(tokens_N)
    n_targets = len(tokens_N) - 1
    if n_targets < 1:
        raise ValueError("held-out split has fewer than 2 tokens; cannot evaluate")
    n = -(-n_targets // seq_len)
    padded = np.zeros(n * seq_len + 1, np.int32)
    padded[: len(tokens_N)] = tokens_N
    starts = np.arange(n) * seq_len
    windows = padded[starts[:, None] + np.arange(seq_len + 1)]
    weights = (starts[:, None] + np.arange(seq_len) < n_targets).astype(np.float32)
    if 0 < max_windows < n:
        keep = np.linspace(0, n - 1, max_windows).round().astype(int)
        windows, weights = windows[keep], weights[keep]
    return windows, weights


def evaluate(eval_step, params, windows: np.ndarray, weights: np.ndarray, byte_lengths: np.ndarray,
             batch_size: int) -> dict:
    """Runs `eval_step(params, windows_BT1, weights_BT) -> {"nll": sum, ...}` over fixed-size batches.

    Besides the val_* figures of the summed NLL, every summed quantity is reported per scored
    token as "eval/<name>" (eval/nll included), the names the task logs in training."""
    totals: dict[str, float] = {}
    n = len(windows)
    pad = (-n) % batch_size  # one compiled shape: pad the last batch with weight-0 rows
    windows = np.concatenate([windows, np.zeros((pad, windows.shape[1]), windows.dtype)])
    weights = np.concatenate([weights, np.zeros((pad, weights.shape[1]), weights.dtype)])
    for i in progress.track(range(0, len(windows), batch_size)):
        for key, value in eval_step(params, windows[i:i + batch_size], weights[i:i + batch_size]).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    n_tokens = float(weights.sum())
    n_bytes = float((byte_lengths[windows[:, 1:]] * weights).sum())
    total_nll = totals["nll"]
    loss = total_nll / n_tokens
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 700.0)),
        "val_bpb": total_nll / math.log(2) / max(n_bytes, 1.0),
        "val_tokens": int(n_tokens),
        **{f"eval/{key}": total / n_tokens for key, total in totals.items()},
    }
