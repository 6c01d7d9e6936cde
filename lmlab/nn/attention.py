"""Multi-head self-attention with MHA / GQA / MQA head layouts and a functional KV cache.

The kernel itself lives in lmlab.ops.attention; this module owns projections, rotary positions and
the cache. A cache is a dict {"k": [B, S, K, H], "v": [B, S, K, H], "segment_ids": [B, S]} for one
layer; only the K kv heads are stored, so GQA/MQA shrink it by N / K. The segment ids of the slots
(0 = padding or not yet written) keep a left-padded prompt's pad slots hidden from every later
query: decoding batches of prompts of different lengths.

With `kv_quant = "int8"` (config quant.kv, set by lmlab.models.quantize) "k" and "v" hold int8
values and "k_scale" / "v_scale" [B, S, K] bfloat16 scales, one per token and head
(lmlab.compress.quant.quantize_kv): about half a bfloat16 cache. New keys and values are
quantized as they are written, and the whole cache is dequantized before attending.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab.compress import quant
from lmlab.nn.dropout import split_key
from lmlab.nn.linear import Linear
from lmlab.nn.positions import alibi_slopes, apply_rope
from lmlab.ops.attention import attention


class SelfAttention(nnx.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, *, use_bias: bool, dtype,
                 impl: str, rngs: nnx.Rngs, out_init_std: float = 0.02, alibi: bool = False):
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        # One fused projection: a single GEMM is faster than three small ones on every backend.
        # Columns q | k | v; "qkv" in lmlab.sharding.RULES says how tensor parallelism splits them.
        self.qkv = Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, use_bias=use_bias,
                          dtype=dtype, rngs=rngs, axes=("embed", "qkv"))
        self.out = Linear(n_heads * self.head_dim, d_model, use_bias=use_bias, dtype=dtype,
                          init_std=out_init_std, rngs=rngs, axes=("heads", "embed"))
        self.impl = impl
        self.alibi = alibi  # slopes are a fixed function of the head count, not parameters
        self.kv_quant = "none"  # none | int8: the KV cache's storage (module docstring)

    @classmethod
    def from_config(cls, m, *, dtype, out_init_std: float, rngs: nnx.Rngs) -> "SelfAttention":
        """The self-attention of a block from the model config `m` (every family builds it so)."""
        return cls(m.d_model, m.n_heads, m.n_kv_heads, use_bias=m.use_bias, dtype=dtype, impl=m.attention_impl,
                   rngs=rngs, out_init_std=out_init_std, alibi=m.positions == "alibi")

    def __call__(self, x_BTD: jax.Array, *, rope=None, mask=None, causal: bool = True,
                 cache: dict | None = None, cache_index=None, segment_ids_BT: jax.Array | None = None,
                 dropout_key: jax.Array | None = None):
        """Returns (out_BTD, updated cache or None).

        `segment_ids_BT`: tokens attend only to keys of their own segment (packed documents; see
        lmlab.ops.attention). With a cache they are the new tokens' ids (default: all 1), written
        into the cache next to their keys, and compared with every slot's.
        `dropout_key`: the projections' LoRA dropout (training only; lmlab.nn.linear).
        """
        B, T, _ = x_BTD.shape
        N, K, H = self.n_heads, self.n_kv_heads, self.head_dim
        k_qkv, k_out = split_key(dropout_key, 2)
        qkv = self.qkv(x_BTD, dropout_key=k_qkv)
        q_BTNH = qkv[..., : N * H].reshape(B, T, N, H)
        k_BTKH = qkv[..., N * H: (N + K) * H].reshape(B, T, K, H)
        v_BTKH = qkv[..., (N + K) * H:].reshape(B, T, K, H)
        if rope is not None:
            cos, sin = rope
            q_BTNH, k_BTKH = apply_rope(q_BTNH, cos, sin), apply_rope(k_BTKH, cos, sin)
        q_offset = 0
        segments = {} if segment_ids_BT is None else dict(q_segment_ids=segment_ids_BT, kv_segment_ids=segment_ids_BT)
        if cache is not None:
            # dynamic_update_slice would clamp an overflowing write onto earlier slots: refuse what
            # can be checked while tracing (a Python int index, e.g. the prefill). Decoding loops
            # size the cache to prompt + new tokens, so their traced indices stay inside it.
            if isinstance(cache_index, (int, np.integer)) and cache_index + T > cache["k"].shape[1]:
                raise ValueError(f"{T} tokens at cache_index {cache_index} overflow a KV cache of "
                                 f"{cache['k'].shape[1]} positions")
            segments = write_cache_segments(cache["segment_ids"], segment_ids_BT, cache_index, B, T)
            cache = {**write_cache_kv(cache, k_BTKH, v_BTKH, cache_index), "segment_ids": segments["kv_segment_ids"]}
            k_BTKH, v_BTKH = read_cache_kv(cache, q_BTNH.dtype)
            q_offset = cache_index
        slopes = jnp.asarray(alibi_slopes(N)) if self.alibi else None
        out_BTNH = attention(q_BTNH, k_BTKH, v_BTKH, mask=mask, causal=causal, q_offset=q_offset, impl=self.impl,
                             alibi_slopes=slopes, **segments)
        return self.out(out_BTNH.reshape(B, T, N * H), dropout_key=k_out), cache

    def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict:
        shape = (batch, max_len, self.n_kv_heads, self.head_dim)
        segments = {"segment_ids": jnp.zeros((batch, max_len), jnp.int32)}
        if self.kv_quant == "int8":
            scales = jnp.zeros(shape[:3], jnp.bfloat16)
            return {"k": jnp.zeros(shape, jnp.int8), "v": jnp.zeros(shape, jnp.int8), "k_scale": scales,
                    "v_scale": scales, **segments}
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype), **segments}


def write_cache_kv(cache: dict, k_BTKH: jax.Array, v_BTKH: jax.Array, cache_index) -> dict:
    """The cache's keys and values (and int8 scales) with T new tokens written at cache_index;
    slots beyond them are excluded by causality."""
    def put(slots, new):
        return jax.lax.dynamic_update_slice(slots, new.astype(slots.dtype), (0, cache_index) + (0,) * (slots.ndim - 2))

    if "k_scale" not in cache:
        return {"k": put(cache["k"], k_BTKH), "v": put(cache["v"], v_BTKH)}
    (k_q, k_scale), (v_q, v_scale) = quant.quantize_kv(k_BTKH), quant.quantize_kv(v_BTKH)
    return {"k": put(cache["k"], k_q), "v": put(cache["v"], v_q),
            "k_scale": put(cache["k_scale"], k_scale), "v_scale": put(cache["v_scale"], v_scale)}


def read_cache_kv(cache: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """(k_BSKH, v_BSKH) in `dtype`: the cache's slots, dequantized if they are int8."""
    if "k_scale" not in cache:
        return cache["k"].astype(dtype), cache["v"].astype(dtype)
    return (quant.dequantize_kv(cache["k"], cache["k_scale"], dtype),
            quant.dequantize_kv(cache["v"], cache["v_scale"], dtype))


def write_cache_segments(cache_segment_ids_BS: jax.Array, segment_ids_BT: jax.Array | None, cache_index,
                         B: int, T: int) -> dict:
    """The segment ids `attention` takes for T new tokens written at cache_index of a cache.

    Tokens without ids join segment 1 (a prompt without padding, and every decoding step).
    Returns {"q_segment_ids": [B, T], "kv_segment_ids": [B, S] with the new ids written in}.
    """
    q_BT = jnp.ones((B, T), jnp.int32) if segment_ids_BT is None else jnp.asarray(segment_ids_BT, jnp.int32)
    kv_BS = jax.lax.dynamic_update_slice(cache_segment_ids_BS, q_BT, (0, cache_index))
    return {"q_segment_ids": q_BT, "kv_segment_ids": kv_BS}


class CrossAttention(nnx.Module):
    """Encoder-decoder attention: decoder queries attend to encoder keys/values.

    The encoder side is projected once per input sequence (`encode_kv`), so decoding steps reuse
    it instead of re-projecting the encoder output every token; `mask` is the encoder padding mask
    [B, 1, 1, S] (True = real token).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, *, use_bias: bool, dtype,
                 impl: str, rngs: nnx.Rngs, out_init_std: float = 0.02):
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.q = Linear(d_model, n_heads * self.head_dim, use_bias=use_bias, dtype=dtype, rngs=rngs,
                        axes=("embed", "heads"))
        self.kv = Linear(d_model, 2 * n_kv_heads * self.head_dim, use_bias=use_bias, dtype=dtype, rngs=rngs,
                         axes=("embed", "qkv"))  # k | v columns, split like the fused self-attention qkv
        self.out = Linear(n_heads * self.head_dim, d_model, use_bias=use_bias, dtype=dtype,
                          init_std=out_init_std, rngs=rngs, axes=("heads", "embed"))
        self.impl = impl

    def encode_kv(self, enc_BSD: jax.Array) -> dict:
        B, S, _ = enc_BSD.shape
        K, H = self.n_kv_heads, self.head_dim
        kv = self.kv(enc_BSD)
        return {"k": kv[..., : K * H].reshape(B, S, K, H), "v": kv[..., K * H:].reshape(B, S, K, H)}

    def __call__(self, x_BTD: jax.Array, enc_kv: dict, *, mask=None) -> jax.Array:
        B, T, _ = x_BTD.shape
        q_BTNH = self.q(x_BTD).reshape(B, T, self.n_heads, self.head_dim)
        out_BTNH = attention(q_BTNH, enc_kv["k"].astype(q_BTNH.dtype), enc_kv["v"].astype(q_BTNH.dtype),
                             mask=mask, causal=False, impl=self.impl)
        return self.out(out_BTNH.reshape(B, T, self.n_heads * self.head_dim))
