"""Pallas flash-attention kernels from jax.experimental.pallas.ops, behind lmlab's layout.

- GPU: `pallas.ops.gpu.attention.mha` (Triton-lowered tiles, forward and backward kernels).
- TPU: `pallas.ops.tpu.flash_attention` (the kernel wants [B, N, T, H]; we transpose).
- CPU: the GPU kernel in Pallas *interpret* mode — slow, but it runs the same kernel program, so
  the kernel's maths is testable on a laptop and in CI.

Neither kernel takes GQA, so k/v heads are repeated to the query heads (memory, not maths). They
take segment ids, not arbitrary masks, which covers self-attention with or without causality: a
length that is not a multiple of the tile is padded, and padding keys get another segment id so
real queries never see them. Boolean masks, causal offsets (KV-cache decoding) and cross-attention
with T != S raise NotImplementedError: use "blockwise" or "cudnn" there ("auto" never picks this).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmlab.ops.attention_cudnn import is_static_zero


def pallas_attention(
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
) -> jax.Array:
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    if mask is not None:
        raise NotImplementedError("impl='pallas' takes no boolean mask; use 'blockwise' or 'cudnn' for padded inputs")
    if causal and not is_static_zero(q_offset):
        raise NotImplementedError("impl='pallas' needs q_offset=0 (no KV-cache decoding); use 'blockwise'")
    if T != S:
        raise NotImplementedError(f"impl='pallas' needs equal query and key lengths (got T={T}, S={S})")
    if N != K:  # query head n reads kv head n // (N // K): repeat each kv head N // K times in place
        k_BSKH = jnp.repeat(k_BSKH, N // K, axis=2)
        v_BSKH = jnp.repeat(v_BSKH, N // K, axis=2)

    block = min(block_q, block_k, _round_up(T, 16))
    L = _round_up(T, block)
    segment_BL = None
    if L != T:
        pad = ((0, 0), (0, L - T), (0, 0), (0, 0))
        q_BTNH, k_BSKH, v_BSKH = (jnp.pad(x, pad) for x in (q_BTNH, k_BSKH, v_BSKH))
        segment_BL = jnp.broadcast_to((jnp.arange(L) < T).astype(jnp.int32), (B, L))

    backend = jax.default_backend()
    if backend == "tpu":
        from jax.experimental.pallas.ops.tpu import flash_attention as tpu

        sizes = tpu.BlockSizes(block_q=block, block_k_major=block, block_k=block, block_b=1,
                               block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block,
                               block_q_dkv=block, block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
        segments = None if segment_BL is None else tpu.SegmentIds(q=segment_BL, kv=segment_BL)
        out = tpu.flash_attention(*(x.transpose(0, 2, 1, 3) for x in (q_BTNH, k_BSKH, v_BSKH)),
                                  segment_ids=segments, causal=causal, sm_scale=scale, block_sizes=sizes)
        out_BLNH = out.transpose(0, 2, 1, 3)
    else:
        from jax.experimental.pallas.ops.gpu import attention as gpu

        sizes = gpu.BlockSizes(block_q=block, block_k=block, block_q_dkv=block, block_kv_dkv=block,
                               block_q_dq=block, block_kv_dq=block)
        out_BLNH = gpu.mha(q_BTNH, k_BSKH, v_BSKH, segment_BL, sm_scale=scale, causal=causal,
                           block_sizes=sizes, interpret=backend != "gpu")
    return out_BLNH[:, :T]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
