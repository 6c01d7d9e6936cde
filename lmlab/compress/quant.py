"""Weight and KV-cache quantization as pure functions: round to a few bits, keep the scales.

Weights are [D, F] matrices (input x output, as lmlab.nn.linear stores them):
  * int8, symmetric, one scale per output channel: q = round(w / s), s = max|w[:, f]| / 127.
  * int4 in groups of `group` consecutive input rows (one scale per group and output channel),
    symmetric (q in -8..7, s = max|w| / 7) or asymmetric (q in 0..15 with a zero point z:
    w ~ (q - z) s, the group's [min, max] stretched to include 0). When `group` does not divide
    D the last group is shorter (the main job's MLP has D = 344).
  * int4 values are stored two per byte along the input dimension (row 2i in the low nibble,
    row 2i + 1 in the high one), as symmetric values + 8 so every nibble is unsigned.
Scales are float32: bfloat16 ones would save 2 bytes a group but can round below max|w| / 7
and clip; at group 32 float32 scales cost 1 bit per weight, at 128 a quarter bit.

The KV cache (lmlab.nn.attention) is int8 with a scale per token and head over head_dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

INT8_MAX = 127
INT4_SYMMETRIC_MAX = 7  # symmetric int4: -8 .. 7, scaled so max|w| maps to 7
INT4_LEVELS = 15        # asymmetric int4: 0 .. 15
INT4_OFFSET = 8         # symmetric values are stored as q + 8 (0 .. 15)


def check_group(group) -> int:
    """`group` itself; ValueError unless it is a positive power of two."""
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or group & (group - 1):
        raise ValueError(f"quantization group size must be a positive power of two (32, 64, 128, ...); got {group!r}")
    return group


def _safe(scale: jax.Array) -> jax.Array:
    """An all-zero channel or group gets scale 1 (its values quantize to 0 either way)."""
    return jnp.where(scale > 0, scale, 1.0)


def quantize_int8(w: jax.Array, *, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """(q int8 like w, float32 scales with `axis` reduced): symmetric, one scale per slice along
    the other axes. axis=0 of a [D, F] kernel: one scale per output channel."""
    w = w.astype(jnp.float32)
    scale = _safe(jnp.max(jnp.abs(w), axis=axis) / INT8_MAX)
    q = jnp.clip(jnp.round(w / jnp.expand_dims(scale, axis)), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    return q, scale


def dequantize_int8(q: jax.Array, scale: jax.Array, *, axis: int = 0) -> jax.Array:
    return q.astype(jnp.float32) * jnp.expand_dims(scale, axis)


def group_ids(d_in: int, group: int) -> jax.Array:
    """[D] the group of each input row (the last group may be shorter)."""
    return jnp.arange(d_in) // group


def n_groups(d_in: int, group: int) -> int:
    return math.ceil(d_in / group)


def _group_reduce(w_DF: jax.Array, group: int, reduce) -> jax.Array:
    """[G, F]: `reduce` (jax.ops.segment_max / segment_min) over each group of input rows."""
    D = w_DF.shape[0]
    return reduce(w_DF, group_ids(D, group), num_segments=n_groups(D, group), indices_are_sorted=True)


def _expand_groups(x_GF: jax.Array, d_in: int, group: int) -> jax.Array:
    """[D, F]: each group's value repeated over its rows."""
    return jnp.take(x_GF, group_ids(d_in, group), axis=0)


def quantize_int4(w_DF: jax.Array, group: int, *, asymmetric: bool = False):
    """(nibbles_DF uint8 in 0..15, scale_GF float32, zero_GF uint8 or None), G = ceil(D / group).

    Symmetric: w ~ (nibble - 8) * scale. Asymmetric: w ~ (nibble - zero) * scale.
    """
    check_group(group)
    w_DF = w_DF.astype(jnp.float32)
    D = w_DF.shape[0]
    if not asymmetric:
        scale_GF = _safe(_group_reduce(jnp.abs(w_DF), group, jax.ops.segment_max) / INT4_SYMMETRIC_MAX)
        q_DF = jnp.clip(jnp.round(w_DF / _expand_groups(scale_GF, D, group)), -INT4_OFFSET, INT4_SYMMETRIC_MAX)
        return (q_DF + INT4_OFFSET).astype(jnp.uint8), scale_GF, None
    # The range includes 0, so the zero point is one of the 16 levels and 0 stays exact.
    hi_GF = jnp.maximum(_group_reduce(w_DF, group, jax.ops.segment_max), 0.0)
    lo_GF = jnp.minimum(_group_reduce(w_DF, group, jax.ops.segment_min), 0.0)
    scale_GF = _safe((hi_GF - lo_GF) / INT4_LEVELS)
    zero_GF = jnp.clip(jnp.round(-lo_GF / scale_GF), 0, INT4_LEVELS)
    q_DF = jnp.round(w_DF / _expand_groups(scale_GF, D, group)) + _expand_groups(zero_GF, D, group)
    return jnp.clip(q_DF, 0, INT4_LEVELS).astype(jnp.uint8), scale_GF, zero_GF.astype(jnp.uint8)


def dequantize_int4(nibbles_DF: jax.Array, scale_GF: jax.Array, zero_GF: jax.Array | None, group: int) -> jax.Array:
    """float32 [D, F] from `quantize_int4`'s nibbles (unpacked), scales and zero points."""
    D = nibbles_DF.shape[0]
    offset = INT4_OFFSET if zero_GF is None else _expand_groups(zero_GF.astype(jnp.float32), D, group)
    return (nibbles_DF.astype(jnp.float32) - offset) * _expand_groups(scale_GF, D, group)


def pack_int4(nibbles_DF: jax.Array) -> jax.Array:
    """uint8 [ceil(D / 2), F]: rows 2i (low nibble) and 2i + 1 (high nibble) in one byte; an odd
    D gets a zero high nibble in the last byte."""
    D = nibbles_DF.shape[0]
    nibbles_DF = nibbles_DF.astype(jnp.uint8)
    if D % 2:
        nibbles_DF = jnp.concatenate([nibbles_DF, jnp.zeros((1,) + nibbles_DF.shape[1:], jnp.uint8)])
    return nibbles_DF[0::2] | (nibbles_DF[1::2] << 4)


def unpack_int4(packed_PF: jax.Array, d_in: int) -> jax.Array:
    """uint8 [d_in, F] nibbles from `pack_int4`'s bytes."""
    low, high = packed_PF & 0xF, packed_PF >> 4
    return jnp.stack([low, high], axis=1).reshape((-1,) + packed_PF.shape[1:])[:d_in]


def fake_quantize_int4(w_DF: jax.Array, group: int, *, asymmetric: bool = False) -> jax.Array:
    """Quantization-aware training: the forward sees the int4 round trip of w, the gradient
    passes straight through to w (the straight-through estimator, Bengio et al. 2013)."""
    nibbles, scale, zero = quantize_int4(jax.lax.stop_gradient(w_DF), group, asymmetric=asymmetric)
    rounded = dequantize_int4(nibbles, scale, zero, group).astype(w_DF.dtype)
    return w_DF + jax.lax.stop_gradient(rounded - w_DF)


def fake_quantize_int8(w: jax.Array, *, axis: int = 0) -> jax.Array:
    """As fake_quantize_int4, for the int8 per-channel round trip."""
    q, scale = quantize_int8(jax.lax.stop_gradient(w), axis=axis)
    return w + jax.lax.stop_gradient(dequantize_int8(q, scale, axis=axis).astype(w.dtype) - w)


def quantize_kv(x_BTKH: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(int8 [B, T, K, H], bfloat16 scales [B, T, K]): one scale per token and head.

    The scale is rounded to bfloat16 first and the values are quantized with that rounded scale
    (clipped to +-127), so storage costs 2 bytes per head and token: (H + 2) / 2H of a bfloat16
    cache, 0.53 at H = 32."""
    x = x_BTKH.astype(jnp.float32)
    scale_BTK = _safe(jnp.max(jnp.abs(x), axis=-1) / INT8_MAX).astype(jnp.bfloat16)
    q = jnp.clip(jnp.round(x / scale_BTK.astype(jnp.float32)[..., None]), -INT8_MAX, INT8_MAX)
    return q.astype(jnp.int8), scale_BTK


def dequantize_kv(q_BSKH: jax.Array, scale_BSK: jax.Array, dtype) -> jax.Array:
    return (q_BSKH.astype(jnp.float32) * scale_BSK.astype(jnp.float32)[..., None]).astype(dtype)


# --- whole weight matrices, as lmlab.nn.linear stores them -----------------------------------
WEIGHT_KINDS = ("int8", "int4")


def quantize_weight(w_DF: jax.Array, kind: str, *, group: int = 0, asymmetric: bool = False) -> dict:
    """{"q": payload, "scale": ..., ["zero": ...]} of a [D, F] kernel: int8 per output channel
    (q int8 [D, F], scale [F]) or int4 group-wise (q packed uint8 [ceil(D / 2), F], scale [G, F],
    zero uint8 [G, F] when asymmetric)."""
    if kind == "int8":
        q, scale = quantize_int8(w_DF, axis=0)
        return {"q": q, "scale": scale}
    if kind != "int4":
        raise ValueError(f"unknown weight quantization '{kind}'; expected one of {', '.join(WEIGHT_KINDS)}")
    nibbles, scale, zero = quantize_int4(w_DF, group, asymmetric=asymmetric)
    parts = {"q": pack_int4(nibbles), "scale": scale}
    return parts if zero is None else {**parts, "zero": zero}


def dequantize_weight(parts: dict, kind: str, *, d_in: int, group: int = 0) -> jax.Array:
    """float32 [D, F] from `quantize_weight`'s parts."""
    if kind == "int8":
        return dequantize_int8(parts["q"], parts["scale"], axis=0)
    return dequantize_int4(unpack_int4(parts["q"], d_in), parts["scale"], parts.get("zero"), group)


def fake_quantize_weight(w_DF: jax.Array, kind: str, *, group: int = 0, asymmetric: bool = False) -> jax.Array:
    """`w_DF` as `quantize_weight` then `dequantize_weight` would give it back, with a
    straight-through gradient (quantization-aware training); kind "float" returns it as is."""
    if kind == "float":
        return w_DF
    if kind == "int8":
        return fake_quantize_int8(w_DF, axis=0)
    return fake_quantize_int4(w_DF, group, asymmetric=asymmetric)
