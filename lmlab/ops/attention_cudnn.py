"""cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`.

Our arguments translate as follows: `causal` with a static q_offset of 0 becomes `is_causal`
(cuDNN then skips the masked half); any other causal offset, static or traced, is folded into the
boolean mask, which cuDNN applies as an additive bias spanning the full [T, S]. GPU only, bf16/fp16
only; cuDNN's own shape limits (head dim a multiple of 8, even T and S when training with a bias)
surface as jax's NotImplementedError.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmlab.ops.attention_masks import make_causal_mask

CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def cudnn_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: jax.Array | None = None,
    *,
    causal: bool = False,
    q_offset: int | jax.Array = 0,
    scale: float,
) -> jax.Array:
    """Arguments as in `lmlab.ops.attention.attention` (already validated; mask is 4D or None)."""
    backend = jax.default_backend()
    if backend != "gpu":
        raise ValueError(
            f"impl='cudnn' needs a GPU backend, not {backend!r}; use 'blockwise' or 'naive'"
        )
    if q_BTNH.dtype not in CUDNN_DTYPES:
        raise NotImplementedError(
            f"impl='cudnn' takes bf16/fp16 inputs, got {q_BTNH.dtype}; use 'blockwise' or 'naive'"
        )
    T, S = q_BTNH.shape[1], k_BSKH.shape[1]

    is_causal = False
    allowed = mask
    if causal and is_static_zero(q_offset):
        is_causal = True
    elif causal:
        causal_11TS = make_causal_mask(T, S, q_offset)
        allowed = causal_11TS if allowed is None else allowed & causal_11TS
    if allowed is not None:
        # cuDNN's bias must span [T, S] exactly; batch and head dims may stay broadcast (size 1).
        allowed = jnp.broadcast_to(allowed, allowed.shape[:2] + (T, S))

    out_BTNH = jax.nn.dot_product_attention(
        q_BTNH, k_BSKH, v_BSKH, mask=allowed, scale=scale, is_causal=is_causal,
        implementation="cudnn",
    )
    if allowed is None:
        return out_BTNH
    # A masked score becomes a large negative bias, so a row with no allowed key would average
    # all values; our contract is zeros (and zero gradients) for such rows.
    if is_causal:
        allowed = allowed & make_causal_mask(T, S)
    any_BNT = allowed.any(axis=-1)
    any_BT_N1 = any_BNT.transpose(0, 2, 1)[..., None]  # [B|1, T, N|1, 1] against out [B, T, N, H]
    return jnp.where(any_BT_N1, out_BTNH, jnp.zeros((), out_BTNH.dtype))


def is_static_zero(q_offset) -> bool:
    """True only for a concrete Python/numpy integer 0 (a jax array may be traced)."""
    is_int = isinstance(q_offset, (int, np.integer)) and not isinstance(q_offset, bool)
    return is_int and q_offset == 0
