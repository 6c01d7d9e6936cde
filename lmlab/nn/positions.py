"""Position information: learned and sinusoidal absolute tables, rotary embeddings (RoPE), ALiBi slopes.

`none` (NoPE) adds nothing: a causal decoder still tells positions apart through its mask
(Haviv et al. 2022), which is why the positions experiment keeps it as a control.

`learned_table` and `add_positions` are what every model family uses, driven by `model.positions`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sinusoidal_table(max_len: int, d: int) -> np.ndarray:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same) (Vaswani et al. 2017)."""
    positions = np.arange(max_len, dtype=np.float64)[:, None]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d))
    angles = positions * inv_freq[None, :]
    table = np.zeros((max_len, d), np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d // 2])
    return table.astype(np.float32)


def rope_angles(positions_BT: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin of shape [B, T, head_dim // 2] for the given absolute positions."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles_BTF), jnp.sin(angles_BTF)


def apply_rope(x_BTNH: jax.Array, cos_BTF: jax.Array, sin_BTF: jax.Array) -> jax.Array:
    """Rotates pairs (x[i], x[i + H/2]): the half-split layout of GPT-NeoX and Llama in HF."""
    half = x_BTNH.shape[-1] // 2
    x1, x2 = x_BTNH[..., :half].astype(jnp.float32), x_BTNH[..., half:].astype(jnp.float32)
    cos, sin = cos_BTF[:, :, None, :], sin_BTF[:, :, None, :]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BTNH.dtype)


def alibi_slopes(n_heads: int) -> np.ndarray:
    """Per-head slopes of ALiBi (Press et al. 2022): the geometric sequence 2^(-8/n), 2^(-16/n), ...

    For a head count that is not a power of two, the slopes of the next lower power of two are
    followed by every other slope of the next higher one, as in the paper's reference code.
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** int(np.floor(np.log2(n_heads)))
    slopes = power_of_two(lower)
    if lower < n_heads:
        slopes += power_of_two(2 * lower)[0::2][: n_heads - lower]
    return np.asarray(slopes, np.float32)


def learned_table(m, *, init_std: float, rngs: nnx.Rngs) -> nnx.Param | None:
    """The trainable [max_len, d_model] table when `m.positions` (model config) is learned, else None."""
    if m.positions != "learned":
        return None
    return nnx.Param(jax.random.normal(rngs.params(), (m.max_len, m.d_model)) * init_std,
                     logical_axes=("length", "embed"))


def positions_from_segments(segment_ids_BT: jax.Array) -> jax.Array:
    """[B, T] int32: each token's index within its segment, restarting at 0 where the id changes.

    A segment is a run of equal ids (packed documents 1, 2, ...; 0 = padding, numbered like any
    run), so two neighbouring documents must get different ids. E.g. [0, 0, 1, 1, 1, 2, 2] ->
    [0, 1, 0, 1, 2, 0, 1].
    """
    ids_BT = jnp.asarray(segment_ids_BT, jnp.int32)
    B, T = ids_BT.shape
    t_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    starts_BT = jnp.concatenate([jnp.ones((B, 1), bool), ids_BT[:, 1:] != ids_BT[:, :-1]], axis=1)
    # Index of the latest segment start at or before each token: a running max over the row.
    return t_BT - jax.lax.cummax(jnp.where(starts_BT, t_BT, 0), axis=1)


def check_position_range(m, offset, T: int) -> None:
    """Refuses positions offset .. offset + T - 1 past model.max_len for table positions.

    A table lookup past max_len reads out of bounds (jnp.take fills NaN): refuse what can be
    checked while tracing (a Python int offset); traced decoding indices are the caller's to bound.
    """
    if (m.positions in ("learned", "sinusoidal") and isinstance(offset, (int, np.integer))
            and offset + T > m.max_len):
        raise ValueError(f"positions {offset} .. {offset + T - 1} exceed model.max_len = {m.max_len} "
                         f"({m.positions} positions)")


def add_positions(m, x_BTD: jax.Array, table_LD: nnx.Param | None, *, offset=0,
                  positions_BT: jax.Array | None = None) -> tuple[jax.Array, tuple | None]:
    """(x_BTD with absolute positions added, rotary (cos, sin) for the attention layers or None).

    Positions are `positions_BT` if given (packed rows), else offset .. offset + T - 1 (the KV-cache
    index when decoding). learned adds rows of `table_LD`, sinusoidal of a fixed table; rope only
    returns the tables; alibi does neither: attention biases its scores by distance; none does nothing.
    """
    B, T, _ = x_BTD.shape
    if positions_BT is None:
        check_position_range(m, offset, T)
        positions_BT = jnp.broadcast_to(offset + jnp.arange(T), (B, T))
    if m.positions == "learned":
        return x_BTD + jnp.take(table_LD[...], positions_BT, axis=0).astype(x_BTD.dtype), None
    if m.positions == "sinusoidal":
        # A trace-time constant, not state: nothing to train or checkpoint.
        sin_LD = jnp.asarray(sinusoidal_table(m.max_len, m.d_model))
        return x_BTD + jnp.take(sin_LD, positions_BT, axis=0).astype(x_BTD.dtype), None
    if m.positions == "rope":
        return x_BTD, rope_angles(positions_BT, m.d_model // m.n_heads, m.rope_theta)
    return x_BTD, None
