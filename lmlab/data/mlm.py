"""Masked-LM inputs (BERT): [CLS] text [SEP] examples and the 80/10/10 token masking, as pure functions.

`mask_tokens` is jittable and a function of its key only, so a training batch (drawn on device
from fold_in(data_key, step)) is reproduced exactly on resume, and a fixed key gives evaluations a
fixed masking.

Selection follows the original BERT data pipeline rather than an independent coin per token: each
sequence gets exactly max(1, round(rate * n)) of its n eligible (non-special, non-pad) positions,
chosen uniformly. The count per row is then bounded by round(rate * T), so the loss can gather a
fixed number of positions (`max_selected`) instead of scoring all T x V logits.
"""

from __future__ import annotations

import math
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

PAD_ID = 0
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the selected tokens; the remaining 10% stay unchanged


def protected_mask(vocab_size: int, special_ids: Iterable[int]) -> np.ndarray:
    """bool [V]: ids never selected for prediction nor drawn as random replacements (pad always)."""
    protected_V = np.zeros(vocab_size, bool)
    protected_V[PAD_ID] = True
    protected_V[np.asarray(list(special_ids), np.int64)] = True
    return protected_V


def tokenizer_special_ids(tokenizer) -> list[int]:
    """Ids that are markup, not text: those decoding to no bytes (pad, bos, eos, unk) and the
    user special tokens ([CLS], [SEP], [MASK], <|endoftext|>, ...)."""
    empty = np.flatnonzero(tokenizer.token_byte_lengths() == 0)
    return sorted(set(int(i) for i in empty) | set(tokenizer.special_ids.values()))


def selected_count(n_eligible: int, rate: float) -> int:
    """Positions `mask_tokens` selects in a row with n_eligible eligible ones: max(1, round(rate * n)),
    halves rounded up, in Python (float64) arithmetic; 0 for an empty row."""
    return min(n_eligible, max(1, math.floor(rate * n_eligible + 0.5))) if n_eligible > 0 else 0


def max_selected(seq_len: int, rate: float) -> int:
    """An upper bound on the positions `mask_tokens` selects in a row of seq_len tokens."""
    return selected_count(seq_len, rate)


def mask_tokens(tokens_BT: jax.Array, key: jax.Array, *, vocab_size: int, mask_id: int,
                special_ids: Iterable[int] = (), rate: float = 0.15):
    """BERT masking. Returns (inputs_BT int32, targets_BT int32, weights_BT float32).

    Per row, max(1, round(rate * n)) of the n eligible positions are selected (none if n = 0);
    eligible = not pad (0), not in special_ids, not mask_id. Of the selected positions, 80% become
    mask_id, 10% a uniformly random non-special id, 10% stay as they are (each position draws
    independently). targets = the original tokens everywhere; weights = 1 exactly at the selected
    positions, so a loss weighted by them ignores every other target.
    """
    tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
    protected_V = protected_mask(vocab_size, [*special_ids, mask_id])
    allowed_ids = np.flatnonzero(~protected_V).astype(np.int32)  # random replacements come from these
    if len(allowed_ids) == 0:
        raise ValueError("every id is special: nothing to mask")
    k_select, k_kind, k_random = jax.random.split(key, 3)

    eligible_BT = ~jnp.asarray(protected_V)[tokens_BT]
    n_B = eligible_BT.sum(-1)
    B, T = tokens_BT.shape
    # A table over n = 0..T, so the count is the host's arithmetic (float32 on device rounds some
    # halves the other way, e.g. rate 0.35, n 90) and never exceeds max_selected(T, rate).
    count_B = jnp.asarray([selected_count(n, rate) for n in range(T + 1)], jnp.int32)[n_B]
    # A uniformly random subset of exactly count_B eligible positions: the count_B highest of
    # random scores, with ineligible positions scored below every eligible one. count_B never
    # exceeds max_selected, so top_k over that many is enough (and compiles far faster than a sort).
    scores_BT = jnp.where(eligible_BT, jax.random.uniform(k_select, tokens_BT.shape), -1.0)
    _, top_BP = jax.lax.top_k(scores_BT, max_selected(T, rate))
    take_BP = jnp.arange(top_BP.shape[1]) < count_B[:, None]
    selected_BT = jnp.zeros((B, T), bool).at[jnp.arange(B)[:, None], top_BP].set(take_BP)

    u_BT = jax.random.uniform(k_kind, tokens_BT.shape)
    random_BT = jnp.asarray(allowed_ids)[jax.random.randint(k_random, tokens_BT.shape, 0, len(allowed_ids))]
    replaced_BT = jnp.where(u_BT < MASK_SHARE, mask_id,
                            jnp.where(u_BT < MASK_SHARE + RANDOM_SHARE, random_BT, tokens_BT))
    inputs_BT = jnp.where(selected_BT, replaced_BT, tokens_BT)
    return inputs_BT, tokens_BT, selected_BT.astype(jnp.float32)


def wrap_cls_sep(windows_BL: jax.Array, cls_id: int, sep_id: int) -> jax.Array:
    """[B, L] text windows -> [B, L + 2] examples `[CLS] text [SEP]` (one segment, id 0)."""
    B = windows_BL.shape[0]
    cls_B1 = jnp.full((B, 1), cls_id, jnp.int32)
    sep_B1 = jnp.full((B, 1), sep_id, jnp.int32)
    return jnp.concatenate([cls_B1, windows_BL.astype(jnp.int32), sep_B1], axis=1)


def sample_examples(tokens_N: jax.Array, key: jax.Array, batch: int, seq_len: int, cls_id: int,
                    sep_id: int) -> jax.Array:
    """[batch, seq_len] training examples: [CLS] + seq_len - 2 tokens at a random offset + [SEP].

    Windows run across document boundaries; the end-of-text id between documents is special, so
    it is never selected for prediction.
    """
    L = seq_len - 2
    starts_B = jax.random.randint(key, (batch,), 0, tokens_N.shape[0] - L + 1)
    return wrap_cls_sep(tokens_N[starts_B[:, None] + jnp.arange(L)], cls_id, sep_id)


def heldout_examples(tokens_N: np.ndarray, seq_len: int, cls_id: int, sep_id: int) -> np.ndarray:
    """[n, seq_len] non-overlapping `[CLS] text [SEP]` examples covering every held-out token once.

    The last one is shorter: its [SEP] follows the text and pad ids (0) fill the rest.
    """
    tokens_N = np.asarray(tokens_N, np.int32)
    L = seq_len - 2
    n = -(-len(tokens_N) // L)
    if n == 0:
        raise ValueError("held-out split is empty; cannot evaluate")
    examples = np.full((n, seq_len), PAD_ID, np.int32)
    examples[:, 0] = cls_id
    for i in range(n):
        text = tokens_N[i * L:(i + 1) * L]
        examples[i, 1:1 + len(text)] = text
        examples[i, 1 + len(text)] = sep_id
    return examples
