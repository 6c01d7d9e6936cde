"""The one attention function every model family calls (GPT decoder, BERT encoder, enc-dec).

    out_BTNH = attention(q_BTNH, k_BSKH, v_BSKH, mask=..., causal=..., q_offset=..., impl=...)

Layout is jax.nn.dot_product_attention's: B batch, T query length, S key length, N query heads,
K kv heads (K divides N; query head n reads kv head n // (N // K)), H head dim. Implementations:

- "naive":     reference; materializes [B, N, T, S] scores (attention_naive.py).
- "blockwise": flash-style tiles + online softmax + recomputing custom_vjp; O(T) memory, any
               backend (attention_blockwise.py).
- "cudnn":     jax.nn.dot_product_attention(implementation="cudnn"); GPU, bf16/fp16
               (attention_cudnn.py).
- "pallas":    Pallas flash kernels: ours via Triton on GPU and interpret mode on CPU (every
               case above); jax's TPU kernel for unmasked self-attention (attention_pallas.py).
- "auto":      `select_impl` picks one from the backend, sizes and dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lmlab.ops.attention_blockwise import blockwise_attention
from lmlab.ops.attention_cudnn import CUDNN_DTYPES, cudnn_attention, is_static_zero
from lmlab.ops.attention_masks import (
    make_causal_mask,
    make_padding_mask,
    make_segment_mask,
    padding_mask_from_ids,
)
from lmlab.ops.attention_naive import naive_attention
from lmlab.ops.attention_pallas import pallas_attention

__all__ = [
    "IMPLS",
    "attention",
    "make_causal_mask",
    "make_padding_mask",
    "make_segment_mask",
    "padding_mask_from_ids",
    "select_impl",
]

IMPLS = ("auto", "naive", "blockwise", "cudnn", "pallas")

# Up to this many scores T*S per (batch, head), "auto" keeps the reference: the [T, S] matrix is
# cheap and one fused einsum beats a loop of tiles. On a 2-core CPU, fwd+bwd at B=16, N=4, H=32,
# naive wins at T=128 and blockwise from T=256 up (1.5x at T=1024, 2-3x at T=2048). The GPU value
# is an unmeasured default: there the tile loop runs sequentially and one fused einsum stays fast
# for longer.
NAIVE_MAX_SCORES = {"cpu": 256 * 256, "gpu": 1024 * 1024}


def attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
    q_offset: int | jax.Array = 0,
    scale: float | None = None,
    impl: str = "auto",
    block_q: int = 128,
    block_k: int = 128,
    alibi_slopes: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """softmax(q k^T * scale, masked) v, per query head; returns [B, T, N, H] in q's dtype.

    Args:
      q_BTNH: queries [B, T, N, H]; k_BSKH, v_BSKH: keys/values [B, S, K, H], same dtype as q.
      mask: optional bool, broadcastable to [B, N, T, S], True = may attend (e.g. key padding
        [B, 1, 1, S] or a full [B, 1, T, S]); ANDed with the causal mask.
      causal: query i, at absolute position q_offset + i, may attend key j iff j <= q_offset + i.
      q_offset: Python int or int32 scalar (may be traced: KV-cache decoding puts a T=1 query at
        position `index` of a fixed-length cache, and causality hides the unfilled slots).
        Ignored unless causal.
      scale: Python float multiplying the scores; default 1 / sqrt(H).
      impl: one of IMPLS. block_q, block_k: tile sizes for "blockwise" and "pallas".
      alibi_slopes: optional float [N]: adds ALiBi's -slope_n * |i - j| to the scores, with i the
        query's absolute position (q_offset + index) and j the key's (naive and blockwise).
      q_segment_ids, kv_segment_ids: optional int [B, T] and [B, S], both or neither: query i may
        attend key j only if their ids are equal (packed documents; 0 = padding). ANDed with the
        mask and causality. naive, blockwise and pallas compare ids (per tile: O(T + S) memory);
        cudnn takes them folded into a [B, 1, T, S] mask (a bias); pallas on TPU refuses them.

    A query row whose keys are all masked returns zeros, with zero (never NaN) gradients.
    Scores and softmax statistics are computed in fp32 for bf16/fp16 inputs.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; valid: {', '.join(IMPLS)}")
    B, T, N, H = _check_qkv(q_BTNH, k_BSKH, v_BSKH)
    S = k_BSKH.shape[1]
    mask = _as_4d_mask(mask, B, N, T, S)
    segments = _check_segments(q_segment_ids, kv_segment_ids, B, T, S)
    _check_q_offset(q_offset)
    scale = 1.0 / math.sqrt(H) if scale is None else float(scale)
    if alibi_slopes is not None and jnp.shape(alibi_slopes) != (N,):
        raise ValueError(f"alibi_slopes must have shape [{N}] (one per query head), got {jnp.shape(alibi_slopes)}")

    if impl == "auto":
        needs_bias = mask is not None or segments is not None or (causal and not is_static_zero(q_offset))
        impl = select_impl(
            backend=jax.default_backend(), T=T, S=S, H=H, dtype=q_BTNH.dtype, needs_bias=needs_bias,
            alibi=alibi_slopes is not None,
        )
    common = dict(causal=bool(causal), q_offset=q_offset, scale=scale)
    if impl == "cudnn" and alibi_slopes is not None:
        raise NotImplementedError("impl='cudnn' does not take alibi_slopes; use 'blockwise' or 'pallas'")
    if impl == "naive":
        return naive_attention(q_BTNH, k_BSKH, v_BSKH, mask, alibi_slopes=alibi_slopes, segment_ids=segments,
                               **common)
    if impl == "blockwise":
        if not (_is_positive_int(block_q) and _is_positive_int(block_k)):
            raise ValueError(f"block_q and block_k must be positive ints, got {block_q}, {block_k}")
        return blockwise_attention(
            q_BTNH, k_BSKH, v_BSKH, mask, block_q=block_q, block_k=block_k, alibi_slopes=alibi_slopes,
            segment_ids=segments, **common
        )
    if impl == "cudnn":
        if segments is not None:  # cuDNN takes masks only: compare the ids once, here
            segment_mask_B1TS = make_segment_mask(*segments)
            mask = segment_mask_B1TS if mask is None else mask & segment_mask_B1TS
        return cudnn_attention(q_BTNH, k_BSKH, v_BSKH, mask, **common)
    return pallas_attention(
        q_BTNH, k_BSKH, v_BSKH, mask, block_q=block_q, block_k=block_k, alibi_slopes=alibi_slopes,
        segment_ids=segments, **common
    )


def select_impl(*, backend: str, T: int, S: int, H: int, dtype, needs_bias: bool = False,
                alibi: bool = False) -> str:
    """The "auto" rule, as a pure function of what it depends on.

    GPU: cuDNN when it supports the arguments; otherwise, on any backend, the reference while the
    [T, S] scores are small and the tiled implementation once they are not.
    `needs_bias`: a mask or a non-zero causal offset, which cuDNN takes as a [T, S] bias.
    `alibi`: ALiBi slopes, which only naive and blockwise add (in place, per tile).
    """
    if backend == "gpu" and not alibi and cudnn_supports(T=T, S=S, H=H, dtype=dtype, needs_bias=needs_bias):
        return "cudnn"
    max_scores = NAIVE_MAX_SCORES.get(backend, NAIVE_MAX_SCORES["cpu"])
    return "naive" if T * S <= max_scores else "blockwise"


def cudnn_supports(*, T: int, S: int, H: int, dtype, needs_bias: bool) -> bool:
    """Conservative subset of cuDNN flash attention's limits (checked by jax at trace time).

    Head dim a multiple of 8 and <= 128 (256 needs Hopper), bf16/fp16, and even lengths when a
    bias is present (cuDNN's backward with a bias rejects odd T or S; we may be under `grad`).
    """
    if jnp.dtype(dtype) not in CUDNN_DTYPES or H % 8 or H > 128:
        return False
    return not (needs_bias and (T % 2 or S % 2))


def _check_qkv(q_BTNH, k_BSKH, v_BSKH) -> tuple[int, int, int, int]:
    if q_BTNH.ndim != 4 or k_BSKH.ndim != 4 or v_BSKH.ndim != 4:
        raise ValueError(
            f"attention wants q [B,T,N,H], k/v [B,S,K,H]; got ndims "
            f"{q_BTNH.ndim}, {k_BSKH.ndim}, {v_BSKH.ndim}"
        )
    B, T, N, H = q_BTNH.shape
    if k_BSKH.shape != v_BSKH.shape:
        raise ValueError(f"k and v shapes differ: {k_BSKH.shape} vs {v_BSKH.shape}")
    Bk, S, K, Hk = k_BSKH.shape
    if Bk != B or Hk != H:
        raise ValueError(f"q {q_BTNH.shape} and k {k_BSKH.shape} disagree on batch or head dim")
    if N % K:
        raise ValueError(f"kv heads K={K} must divide query heads N={N}")
    if not (q_BTNH.dtype == k_BSKH.dtype == v_BSKH.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q_BTNH.dtype}, {k_BSKH.dtype}, {v_BSKH.dtype}")
    return B, T, N, H


def _as_4d_mask(mask, B, N, T, S) -> jax.Array | None:
    """Validates a bool mask broadcastable to [B, N, T, S] and left-pads it to 4 dims."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be bool (True = may attend), got {mask.dtype}")
    if mask.ndim > 4:
        raise ValueError(f"mask must broadcast to [B,N,T,S]={[B, N, T, S]}, got shape {mask.shape}")
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if any(m not in (1, full) for m, full in zip(mask.shape, (B, N, T, S))):
        raise ValueError(f"mask must broadcast to [B,N,T,S]={[B, N, T, S]}, got shape {mask.shape}")
    return mask


def _check_segments(q_segment_ids, kv_segment_ids, B, T, S) -> tuple[jax.Array, jax.Array] | None:
    """Validates segment ids: both or neither, integer, shaped [B, T] and [B, S]."""
    if q_segment_ids is None and kv_segment_ids is None:
        return None
    if q_segment_ids is None or kv_segment_ids is None:
        raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    q_BT, kv_BS = jnp.asarray(q_segment_ids), jnp.asarray(kv_segment_ids)
    if q_BT.shape != (B, T) or kv_BS.shape != (B, S):
        raise ValueError(f"segment ids must have shapes [B,T]={[B, T]} and [B,S]={[B, S]}, "
                         f"got {q_BT.shape} and {kv_BS.shape}")
    if not (jnp.issubdtype(q_BT.dtype, jnp.integer) and jnp.issubdtype(kv_BS.dtype, jnp.integer)):
        raise ValueError(f"segment ids must be integers, got {q_BT.dtype} and {kv_BS.dtype}")
    return q_BT.astype(jnp.int32), kv_BS.astype(jnp.int32)


def _check_q_offset(q_offset) -> None:
    if isinstance(q_offset, bool) or not (
        isinstance(q_offset, (int, np.integer))
        or (hasattr(q_offset, "dtype") and jnp.issubdtype(q_offset.dtype, jnp.integer)
            and np.ndim(q_offset) == 0)
    ):
        raise ValueError(f"q_offset must be an int or an integer scalar array, got {q_offset!r}")


def _is_positive_int(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
