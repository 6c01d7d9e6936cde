"""The attention modules: encoder self-attention with padding, and encoder-decoder cross-attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab.compress import quant
from lmlab.nn.attention import CrossAttention, SelfAttention
from lmlab.ops.attention import padding_mask_from_ids


def test_encoder_self_attention_ignores_padded_keys():
    attn = SelfAttention(16, 4, 2, use_bias=True, dtype=jnp.float32, impl="auto", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    ids = jnp.array([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10]])
    mask = padding_mask_from_ids(ids, 0)
    out, _ = attn(x, causal=False, mask=mask)
    changed = x.at[0, 4:].set(123.0)  # garbage in the padded positions of sequence 0
    out_changed, _ = attn(changed, causal=False, mask=mask)
    np.testing.assert_allclose(out[0, :4], out_changed[0, :4], rtol=1e-5, atol=1e-6)
    # Bidirectional: the first token sees later ones.
    later = x.at[1, 5].add(1.0)
    assert not np.allclose(attn(later, causal=False)[0][1, 0], attn(x, causal=False)[0][1, 0])


def test_cross_attention_matches_formula_and_respects_encoder_padding():
    attn = CrossAttention(16, 4, 4, use_bias=False, dtype=jnp.float32, impl="naive", rngs=nnx.Rngs(1))
    dec = jax.random.normal(jax.random.key(1), (1, 3, 16))
    enc = jax.random.normal(jax.random.key(2), (1, 5, 16))
    mask = jnp.array([True, True, True, False, False])[None, None, None, :]
    out = attn(dec, attn.encode_kv(enc), mask=mask)
    # By hand, per head, over the 3 real encoder positions.
    q = (dec @ attn.q.kernel[...]).reshape(1, 3, 4, 4)
    kv = enc @ attn.kv.kernel[...]
    k, v = kv[..., :16].reshape(1, 5, 4, 4)[:, :3], kv[..., 16:].reshape(1, 5, 4, 4)[:, :3]
    p = jax.nn.softmax(jnp.einsum("btnh,bsnh->bnts", q, k) / 2.0, axis=-1)
    expected = jnp.einsum("bnts,bsnh->btnh", p, v).reshape(1, 3, 16) @ attn.out.kernel[...]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    garbage = enc.at[0, 3:].set(50.0)
    np.testing.assert_allclose(attn(dec, attn.encode_kv(garbage), mask=mask), out, rtol=1e-5, atol=1e-6)


def test_a_prefill_longer_than_the_kv_cache_is_refused():
    attn = SelfAttention(16, 2, 1, use_bias=False, dtype=jnp.float32, impl="naive", rngs=nnx.Rngs(0))
    x = jnp.ones((1, 5, 16))
    out, cache = attn(x, cache=attn.init_cache(1, 5), cache_index=0)  # exactly fits
    assert cache["k"].shape == (1, 5, 1, 8)
    with pytest.raises(ValueError, match="overflow a KV cache of 4 positions"):
        attn(x, cache=attn.init_cache(1, 4), cache_index=0)


def test_a_numpy_integer_cache_index_past_the_end_is_refused_not_clamped():
    # A np.int64 index (e.g. from np.arange) is as static as a Python int: an overflowing write was
    # clamped by dynamic_update_slice onto slots 1..3 instead of 2..4, silently.
    attn = SelfAttention(16, 2, 1, use_bias=False, dtype=jnp.float32, impl="naive", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (1, 3, 16))
    _, cache = attn(x[:, :2], cache=attn.init_cache(1, 4), cache_index=np.int64(2))  # fits: slots 2, 3
    np.testing.assert_array_equal(np.abs(np.asarray(cache["k"][0, :, 0])).sum(-1) > 0, [False, False, True, True])
    with pytest.raises(ValueError, match="3 tokens at cache_index 2 overflow a KV cache of 4 positions"):
        attn(x, cache=attn.init_cache(1, 4), cache_index=np.int64(2))


def test_int8_kv_cache_decoding_equals_dequantize_then_attend():
    """Prefill 5 tokens, decode a 6th: each output is softmax attention over the int8-rounded
    keys and values (a bfloat16 scale per token and head), computed here by hand."""
    attn = SelfAttention(16, 4, 2, use_bias=True, dtype=jnp.float32, impl="naive", rngs=nnx.Rngs(3))
    attn.kv_quant = "int8"
    x = jax.random.normal(jax.random.key(0), (1, 6, 16)) * 3.0
    cache = attn.init_cache(1, 8)
    assert cache["k"].dtype == jnp.int8 and cache["k_scale"].shape == (1, 8, 2)
    prefill, cache = attn(x[:, :5], cache=cache, cache_index=0)
    step, cache = attn(x[:, 5:], cache=cache, cache_index=5)

    qkv = x @ attn.qkv.kernel[...] + attn.qkv.bias[...]
    q, k, v = qkv[..., :16].reshape(1, 6, 4, 4), qkv[..., 16:24].reshape(1, 6, 2, 4), qkv[..., 24:].reshape(1, 6, 2, 4)
    k_dq, v_dq = (quant.dequantize_kv(*quant.quantize_kv(t), jnp.float32) for t in (k, v))
    np.testing.assert_array_equal(cache["k"][:, :6], quant.quantize_kv(k)[0])
    k_dq, v_dq = jnp.repeat(k_dq, 2, axis=2), jnp.repeat(v_dq, 2, axis=2)  # GQA: 2 query heads per kv head
    scores = jnp.einsum("btnh,bsnh->bnts", q, k_dq) / 2.0
    scores = jnp.where(jnp.tril(jnp.ones((6, 6), bool)), scores, -jnp.inf)
    expected = jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(scores, -1), v_dq).reshape(1, 6, 16)
    expected = expected @ attn.out.kernel[...] + attn.out.bias[...]
    np.testing.assert_allclose(prefill, expected[:, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step, expected[:, 5:], rtol=1e-5, atol=1e-5)
    attn.kv_quant = "none"  # the float cache gives nearly, not exactly, the same
    float_step = attn(x[:, 5:], cache=attn(x[:, :5], cache=attn.init_cache(1, 8), cache_index=0)[1], cache_index=5)[0]
    assert 0 < float(jnp.max(jnp.abs(float_step - step))) < 0.05
