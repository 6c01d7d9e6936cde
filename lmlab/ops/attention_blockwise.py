"""Flash-style attention in plain JAX: tiled online softmax forward, recomputing backward.

Neither pass materializes the [T, S] score matrix: the forward keeps a running max / sum /
weighted sum per query tile while it walks the key tiles, and saves only `out` and the
per-row logsumexp; the backward (a `jax.custom_vjp`) recomputes each score tile from q, k and
that logsumexp. Peak temporary memory is O(T*H + block_q*block_k) per (batch, head) instead of
O(T*S). Loops are `lax.map` / `fori_loop`, so it runs on every backend (no Pallas).

Shape letters: B batch, T/S query/key length, K kv heads, G = N // K query heads per kv head,
H head dim, Q/C one query/key tile (block_q / block_k rows). Queries are reshaped into
[B, T, K, G, H] groups, so GQA/MQA never copies k or v.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lmlab.ops.attention_masks import alibi_bias


class _Tiling(NamedTuple):
    """Static (hashable) settings of one call; `custom_vjp` gets it as a non-differentiable arg."""

    scale: float
    causal: bool
    block_q: int
    block_k: int
    kv_len: int  # S before padding: keys at positions >= kv_len are padding


def blockwise_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: jax.Array | None = None,
    *,
    causal: bool = False,
    q_offset: int | jax.Array = 0,
    scale: float,
    block_q: int = 128,
    block_k: int = 128,
    alibi_slopes: jax.Array | None = None,
    segment_ids: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Arguments as in `lmlab.ops.attention.attention` (already validated; mask is 4D or None;
    segment_ids is (q_segment_ids_BT, kv_segment_ids_BS) or None, compared tile by tile)."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    G = N // K
    # A tile never needs to be longer than the sequence (decoding: T=1 must not pad to 128).
    block_q, block_k = min(block_q, T), min(block_k, S)
    T_pad, S_pad = _round_up(T, block_q), _round_up(S, block_k)

    q_BTKGH = _pad_axis(q_BTNH.reshape(B, T, K, G, H), 1, T_pad)
    k_BSKH = _pad_axis(k_BSKH, 1, S_pad)
    v_BSKH = _pad_axis(v_BSKH, 1, S_pad)
    mask_BKGTS = None if mask is None else _group_mask(mask, K, G, T, S, T_pad, S_pad)
    # Padded queries are dropped and padded keys never attended, so the pad value is irrelevant.
    q_seg_BT, kv_seg_BS = (None, None) if segment_ids is None else (
        _pad_axis(segment_ids[0], 1, T_pad), _pad_axis(segment_ids[1], 1, S_pad))

    tiling = _Tiling(float(scale), bool(causal), block_q, block_k, S)
    q_offset = jnp.asarray(q_offset, jnp.int32)
    slopes_KG = None if alibi_slopes is None else jnp.asarray(alibi_slopes, jnp.float32).reshape(K, G)
    out_BTKGH = _flash(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT, kv_seg_BS, tiling)
    return out_BTKGH[:, :T].reshape(B, T, N, H)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _group_mask(mask, K, G, T, S, T_pad, S_pad) -> jax.Array:
    """4D mask [B|1, N|1, T|1, S|1] -> [B|1, K|1, G|1, T_pad|1, S_pad|1], keeping broadcast dims.

    Padding is False: padded keys are never attended, padded queries attend nothing.
    """
    Bm, Nm, Tm, Sm = mask.shape
    mask = mask.reshape(Bm, K, G, Tm, Sm) if Nm > 1 else mask.reshape(Bm, 1, 1, Tm, Sm)
    if Tm == T and T > 1:
        mask = _pad_axis(mask, 3, T_pad, False)
    if Sm == S and S > 1:
        mask = _pad_axis(mask, 4, S_pad, False)
    return mask


def _tile_allowed(mask_BKGTS, q_offset, q_tile, k_tile, t: _Tiling, segs=(None, None)) -> jax.Array | None:
    """Which (query, key) pairs of tile (q_tile, k_tile) may attend; None when all may.

    Causality and key padding come from iotas, segments from the [B, T] / [B, S] ids (nothing
    [T, S]-sized is stored); the user mask is sliced along the axes it actually varies over.
    """
    q_pos_Q = q_tile * t.block_q + jnp.arange(t.block_q, dtype=jnp.int32)  # relative to q_offset
    k_pos_C = k_tile * t.block_k + jnp.arange(t.block_k, dtype=jnp.int32)
    allowed_QC = None
    if t.causal:
        allowed_QC = k_pos_C[None, :] <= q_offset + q_pos_Q[:, None]
    if t.kv_len % t.block_k:
        real_1C = (k_pos_C < t.kv_len)[None, :]
        allowed_QC = real_1C if allowed_QC is None else allowed_QC & real_1C
    q_seg_BT, kv_seg_BS = segs
    if q_seg_BT is not None:
        q_seg_BQ = lax.dynamic_slice_in_dim(q_seg_BT, q_tile * t.block_q, t.block_q, axis=1)
        kv_seg_BC = lax.dynamic_slice_in_dim(kv_seg_BS, k_tile * t.block_k, t.block_k, axis=1)
        same_B11QC = (q_seg_BQ[:, :, None] == kv_seg_BC[:, None, :])[:, None, None]
        allowed_QC = same_B11QC if allowed_QC is None else allowed_QC & same_B11QC
    if mask_BKGTS is None:
        return allowed_QC
    tile = mask_BKGTS
    if tile.shape[3] > 1:
        tile = lax.dynamic_slice_in_dim(tile, q_tile * t.block_q, t.block_q, axis=3)
    if tile.shape[4] > 1:
        tile = lax.dynamic_slice_in_dim(tile, k_tile * t.block_k, t.block_k, axis=4)
    return tile if allowed_QC is None else tile & allowed_QC


def _scores(q_BQKGH, k_BCKH, slopes_KG, q_offset, q_tile, k_tile, t: _Tiling) -> jax.Array:
    """One score tile [B, K, G, Q, C] in fp32 (bf16 inputs accumulate in fp32), ALiBi bias added."""
    s = jnp.einsum("bqkgh,bckh->bkgqc", q_BQKGH, k_BCKH, preferred_element_type=jnp.float32)
    s = s * t.scale
    if slopes_KG is not None:
        q_pos_Q = q_offset + q_tile * t.block_q + jnp.arange(t.block_q, dtype=jnp.int32)
        k_pos_C = k_tile * t.block_k + jnp.arange(t.block_k, dtype=jnp.int32)
        s = s + alibi_bias(slopes_KG, q_pos_Q, k_pos_C)[None]
    return s


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _flash(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT, kv_seg_BS, t: _Tiling):
    out_BTKGH, _ = _flash_forward(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT, kv_seg_BS, t)
    return out_BTKGH


def _flash_forward(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT, kv_seg_BS, t: _Tiling):
    """Returns out [B, T, K, G, H] (q's dtype) and logsumexp [B, K, G, T] (fp32)."""
    B, T, K, G, H = q_BTKGH.shape
    num_q_tiles, num_k_tiles = T // t.block_q, k_BSKH.shape[1] // t.block_k

    def one_query_tile(q_tile):
        q_BQKGH = lax.dynamic_slice_in_dim(q_BTKGH, q_tile * t.block_q, t.block_q, axis=1)

        def visit_key_tile(k_tile, carry):
            max_BKGQ, sum_BKGQ, acc_BKGQH = carry
            k_BCKH = lax.dynamic_slice_in_dim(k_BSKH, k_tile * t.block_k, t.block_k, axis=1)
            v_BCKH = lax.dynamic_slice_in_dim(v_BSKH, k_tile * t.block_k, t.block_k, axis=1)
            s_BKGQC = _scores(q_BQKGH, k_BCKH, slopes_KG, q_offset, q_tile, k_tile, t)
            allowed = _tile_allowed(mask_BKGTS, q_offset, q_tile, k_tile, t, (q_seg_BT, kv_seg_BS))
            if allowed is not None:
                s_BKGQC = jnp.where(allowed, s_BKGQC, -jnp.inf)
            new_max_BKGQ = jnp.maximum(max_BKGQ, s_BKGQC.max(axis=-1))
            # While a row has seen only masked keys its max is -inf; shifting by 0 instead keeps
            # exp(-inf - (-inf)) = NaN out: masked scores still give exp(-inf) = 0.
            shift_BKGQ = jnp.where(jnp.isneginf(new_max_BKGQ), 0.0, new_max_BKGQ)
            p_BKGQC = jnp.exp(s_BKGQC - shift_BKGQ[..., None])
            rescale_BKGQ = jnp.exp(max_BKGQ - shift_BKGQ)  # old statistics were relative to old max
            sum_BKGQ = rescale_BKGQ * sum_BKGQ + p_BKGQC.sum(axis=-1)
            pv_BKGQH = jnp.einsum(
                "bkgqc,bckh->bkgqh", p_BKGQC.astype(v_BCKH.dtype), v_BCKH,
                preferred_element_type=jnp.float32,
            )
            acc_BKGQH = rescale_BKGQ[..., None] * acc_BKGQH + pv_BKGQH
            return new_max_BKGQ, sum_BKGQ, acc_BKGQH

        init = (
            jnp.full((B, K, G, t.block_q), -jnp.inf, jnp.float32),
            jnp.zeros((B, K, G, t.block_q), jnp.float32),
            jnp.zeros((B, K, G, t.block_q, H), jnp.float32),
        )
        stop = num_k_tiles
        if t.causal:  # key tiles entirely after this tile's last query are fully masked: skip them
            last_q_pos = q_offset + (q_tile + 1) * t.block_q - 1
            stop = jnp.clip(last_q_pos // t.block_k + 1, 0, num_k_tiles)
        max_BKGQ, sum_BKGQ, acc_BKGQH = lax.fori_loop(0, stop, visit_key_tile, init)

        # A row with no allowed key has sum 0 and acc 0: dividing by 1 gives the promised zeros.
        empty_BKGQ = sum_BKGQ == 0.0
        safe_sum_BKGQ = jnp.where(empty_BKGQ, 1.0, sum_BKGQ)
        out_BQKGH = (acc_BKGQH / safe_sum_BKGQ[..., None]).transpose(0, 3, 1, 2, 4)
        # Any finite logsumexp works for empty rows: the backward's exp(-inf - lse) is then 0.
        lse_BKGQ = jnp.where(empty_BKGQ, 0.0, max_BKGQ + jnp.log(safe_sum_BKGQ))
        return out_BQKGH.astype(q_BTKGH.dtype), lse_BKGQ

    out_nBQKGH, lse_nBKGQ = lax.map(one_query_tile, jnp.arange(num_q_tiles))
    out_BTKGH = out_nBQKGH.transpose(1, 0, 2, 3, 4, 5).reshape(B, T, K, G, H)
    lse_BKGT = lse_nBKGQ.transpose(1, 2, 3, 0, 4).reshape(B, K, G, T)
    return out_BTKGH, lse_BKGT


def _flash_fwd(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT, kv_seg_BS, t: _Tiling):
    out_BTKGH, lse_BKGT = _flash_forward(q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, q_seg_BT,
                                         kv_seg_BS, t)
    residuals = (q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, (q_seg_BT, kv_seg_BS), out_BTKGH,
                 lse_BKGT)
    return out_BTKGH, residuals


def _flash_bwd(t: _Tiling, residuals, dout_BTKGH):
    """FlashAttention-2 backward: outer loop over key tiles, inner over query tiles.

    With P = softmax(S) recomputed as exp(S - lse): dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(dO * O)), dK = scale * dS^T Q, dQ = scale * dS K. dK/dV of a key tile
    finish inside its inner loop; dQ is accumulated across key tiles in one [B, T, K, G, H] buffer.
    """
    q_BTKGH, k_BSKH, v_BSKH, mask_BKGTS, q_offset, slopes_KG, segs, out_BTKGH, lse_BKGT = residuals
    B, T, K, G, H = q_BTKGH.shape
    num_q_tiles, num_k_tiles = T // t.block_q, k_BSKH.shape[1] // t.block_k
    # The softmax Jacobian needs sum_c P*dP per row, which equals rowsum(dO * O): O(T*H) once.
    delta_BKGT = jnp.einsum(
        "btkgh,btkgh->bkgt", dout_BTKGH.astype(jnp.float32), out_BTKGH.astype(jnp.float32)
    )

    def one_key_tile(dq_BTKGH, k_tile):
        k_BCKH = lax.dynamic_slice_in_dim(k_BSKH, k_tile * t.block_k, t.block_k, axis=1)
        v_BCKH = lax.dynamic_slice_in_dim(v_BSKH, k_tile * t.block_k, t.block_k, axis=1)

        def visit_query_tile(q_tile, carry):
            dk_BCKH, dv_BCKH, dq_BTKGH = carry
            start = q_tile * t.block_q
            q_BQKGH = lax.dynamic_slice_in_dim(q_BTKGH, start, t.block_q, axis=1)
            do_BQKGH = lax.dynamic_slice_in_dim(dout_BTKGH, start, t.block_q, axis=1)
            lse_BKGQ = lax.dynamic_slice_in_dim(lse_BKGT, start, t.block_q, axis=3)
            delta_BKGQ = lax.dynamic_slice_in_dim(delta_BKGT, start, t.block_q, axis=3)

            s_BKGQC = _scores(q_BQKGH, k_BCKH, slopes_KG, q_offset, q_tile, k_tile, t)
            allowed = _tile_allowed(mask_BKGTS, q_offset, q_tile, k_tile, t, segs)
            if allowed is not None:
                s_BKGQC = jnp.where(allowed, s_BKGQC, -jnp.inf)
            p_BKGQC = jnp.exp(s_BKGQC - lse_BKGQ[..., None])  # masked: exp(-inf) = 0

            dv_BCKH += jnp.einsum(
                "bkgqc,bqkgh->bckh", p_BKGQC.astype(do_BQKGH.dtype), do_BQKGH,
                preferred_element_type=jnp.float32,
            )
            dp_BKGQC = jnp.einsum(
                "bqkgh,bckh->bkgqc", do_BQKGH, v_BCKH, preferred_element_type=jnp.float32
            )
            ds_BKGQC = p_BKGQC * (dp_BKGQC - delta_BKGQ[..., None]) * t.scale
            dk_BCKH += jnp.einsum(
                "bkgqc,bqkgh->bckh", ds_BKGQC.astype(q_BQKGH.dtype), q_BQKGH,
                preferred_element_type=jnp.float32,
            )
            dq_BQKGH = jnp.einsum(
                "bkgqc,bckh->bqkgh", ds_BKGQC.astype(k_BCKH.dtype), k_BCKH,
                preferred_element_type=jnp.float32,
            )
            dq_BQKGH += lax.dynamic_slice_in_dim(dq_BTKGH, start, t.block_q, axis=1)
            dq_BTKGH = lax.dynamic_update_slice_in_dim(dq_BTKGH, dq_BQKGH, start, axis=1)
            return dk_BCKH, dv_BCKH, dq_BTKGH

        start = 0
        if t.causal:  # query tiles whose last position precedes this key tile see none of it
            start = jnp.clip((k_tile * t.block_k - q_offset) // t.block_q, 0, num_q_tiles)
        zeros_BCKH = jnp.zeros((B, t.block_k, K, H), jnp.float32)
        dk_BCKH, dv_BCKH, dq_BTKGH = lax.fori_loop(
            start, num_q_tiles, visit_query_tile, (zeros_BCKH, zeros_BCKH, dq_BTKGH)
        )
        return dq_BTKGH, (dk_BCKH, dv_BCKH)

    dq_BTKGH = jnp.zeros(q_BTKGH.shape, jnp.float32)
    dq_BTKGH, (dk_nBCKH, dv_nBCKH) = lax.scan(one_key_tile, dq_BTKGH, jnp.arange(num_k_tiles))
    S = k_BSKH.shape[1]
    dk_BSKH = dk_nBCKH.transpose(1, 0, 2, 3, 4).reshape(B, S, K, H)
    dv_BSKH = dv_nBCKH.transpose(1, 0, 2, 3, 4).reshape(B, S, K, H)
    # mask, q_offset, the ALiBi slopes and segment ids are not differentiable: None is a zero cotangent.
    return (
        dq_BTKGH.astype(q_BTKGH.dtype),
        dk_BSKH.astype(k_BSKH.dtype),
        dv_BSKH.astype(v_BSKH.dtype),
        None,
        None,
        None,
        None,
        None,
    )


_flash.defvjp(_flash_fwd, _flash_bwd)
