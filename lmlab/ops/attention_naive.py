"""Reference attention: materialize the [B, N, T, S] scores, mask, softmax, weighted sum.

This is the readable definition every other implementation is tested against, so it favours
clarity over memory: it repeats kv heads instead of grouping queries, and relies on autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmlab.ops.attention_masks import alibi_bias, make_causal_mask, make_segment_mask


def naive_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: jax.Array | None = None,
    *,
    causal: bool = False,
    q_offset: int | jax.Array = 0,
    scale: float,
    alibi_slopes: jax.Array | None = None,
    segment_ids: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Arguments as in `lmlab.ops.attention.attention` (already validated; mask is 4D or None;
    segment_ids is (q_segment_ids_BT, kv_segment_ids_BS) or None)."""
    T, N = q_BTNH.shape[1], q_BTNH.shape[2]
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    # Query head n reads kv head n // (N // K); repeating makes that the plain MHA einsum below.
    k_BSNH = jnp.repeat(k_BSKH, N // K, axis=2)
    v_BSNH = jnp.repeat(v_BSKH, N // K, axis=2)

    # Scores and softmax statistics in fp32 whatever the input dtype (bf16 exp/sum loses too much).
    scores_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH, preferred_element_type=jnp.float32)
    scores_BNTS = scores_BNTS * scale
    if alibi_slopes is not None:
        q_pos_T = jnp.arange(T, dtype=jnp.int32) + jnp.asarray(q_offset, jnp.int32)
        scores_BNTS = scores_BNTS + alibi_bias(alibi_slopes, q_pos_T, jnp.arange(S, dtype=jnp.int32))[None]

    allowed_BNTS = mask
    if segment_ids is not None:
        segment_B1TS = make_segment_mask(*segment_ids)
        allowed_BNTS = segment_B1TS if allowed_BNTS is None else allowed_BNTS & segment_B1TS
    if causal:
        causal_11TS = make_causal_mask(T, S, q_offset)
        allowed_BNTS = causal_11TS if allowed_BNTS is None else allowed_BNTS & causal_11TS

    if allowed_BNTS is None:
        probs_BNTS = jax.nn.softmax(scores_BNTS, axis=-1)
    else:
        probs_BNTS = _masked_softmax(scores_BNTS, allowed_BNTS)

    out_BTNH = jnp.einsum(
        "bnts,bsnh->btnh", probs_BNTS.astype(v_BSNH.dtype), v_BSNH,
        preferred_element_type=jnp.float32,
    )
    return out_BTNH.astype(q_BTNH.dtype)


def _masked_softmax(scores_BNTS: jax.Array, allowed_BNTS: jax.Array) -> jax.Array:
    """Softmax over keys where masked keys get probability 0 and fully-masked rows are all 0.

    Masked scores are replaced by a finite value (not -inf) *before* the max, so no row ever
    computes inf - inf; the exponentials are then zeroed with `where`, which also zeroes their
    gradients. A row with no allowed key has sum 0 and divides by 1 instead, giving exact zeros
    and finite gradients.
    """
    scores_BNTS = jnp.where(allowed_BNTS, scores_BNTS, jnp.finfo(jnp.float32).min)
    rowmax_BNT1 = jax.lax.stop_gradient(scores_BNTS.max(axis=-1, keepdims=True))  # shift only
    exp_BNTS = jnp.where(allowed_BNTS, jnp.exp(scores_BNTS - rowmax_BNT1), 0.0)
    rowsum_BNT1 = exp_BNTS.sum(axis=-1, keepdims=True)
    return exp_BNTS / jnp.where(rowsum_BNT1 == 0.0, 1.0, rowsum_BNT1)
