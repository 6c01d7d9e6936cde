"""Boolean attention masks in the layout `attention` expects: True = may attend.

Every mask here broadcasts to scores [B, N, T, S] (batch, heads, queries, keys), so masks combine
with `&` and go straight into `attention(..., mask=...)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_causal_mask(T: int, S: int, q_offset: int | jax.Array = 0) -> jax.Array:
    """[1, 1, T, S]: query i (at absolute position q_offset + i) may attend key j iff
    j <= q_offset + i.

    `q_offset` may be traced (KV-cache decoding), so the comparison is done on iotas, not numpy.
    """
    q_pos_T1 = jnp.arange(T, dtype=jnp.int32)[:, None] + jnp.asarray(q_offset, jnp.int32)
    k_pos_1S = jnp.arange(S, dtype=jnp.int32)[None, :]
    return (k_pos_1S <= q_pos_T1)[None, None]


def make_padding_mask(lengths_B: jax.Array, S: int) -> jax.Array:
    """[B, 1, 1, S]: key j of sequence b is real iff j < lengths_B[b] (right padding)."""
    k_pos_S = jnp.arange(S, dtype=jnp.int32)
    lengths_B = jnp.asarray(lengths_B, jnp.int32)
    return (k_pos_S[None, :] < lengths_B[:, None])[:, None, None, :]


def padding_mask_from_ids(ids_BS: jax.Array, pad_id: int) -> jax.Array:
    """[B, 1, 1, S]: key j of sequence b is real iff its id is not `pad_id` (either side)."""
    ids_BS = jnp.asarray(ids_BS)
    return (ids_BS != pad_id)[:, None, None, :]


def make_segment_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array) -> jax.Array:
    """[B, 1, T, S]: query i of row b may attend key j iff both belong to the same segment.

    Segments are the documents packed into one row (ids 1, 2, ...; 0 marks padding, which then
    only ever meets padding, so a pad query still sees something and stays finite).
    """
    q_BT = jnp.asarray(q_segment_ids_BT, jnp.int32)
    kv_BS = jnp.asarray(kv_segment_ids_BS, jnp.int32)
    return (q_BT[:, :, None] == kv_BS[:, None, :])[:, None]


def alibi_bias(slopes, q_pos, k_pos) -> jax.Array:
    """ALiBi's additive score bias -slope * |q_pos - k_pos|, shaped slopes.shape + [Q, C].

    Distances are absolute so the same bias serves causal and bidirectional attention (with a
    causal mask only j <= i survives, where it is the paper's -slope * (i - j)).
    """
    distance = jnp.abs(q_pos[:, None] - k_pos[None, :]).astype(jnp.float32)
    return -slopes[..., None, None].astype(jnp.float32) * distance
