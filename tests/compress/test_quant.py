import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab.compress import quant


def _w(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("d_in", [8, 7, 344])
def test_int4_pack_unpack_is_exact(d_in):
    nibbles = jax.random.randint(jax.random.key(1), (d_in, 5), 0, 16).astype(jnp.uint8)
    packed = quant.pack_int4(nibbles)
    assert packed.dtype == jnp.uint8 and packed.shape == ((d_in + 1) // 2, 5)
    np.testing.assert_array_equal(quant.unpack_int4(packed, d_in), nibbles)


def test_pack_layout_low_nibble_first():
    packed = quant.pack_int4(jnp.array([[1], [2], [15]], jnp.uint8))
    np.testing.assert_array_equal(packed, [[1 | 2 << 4], [15]])


def test_int8_per_channel_error_within_half_a_step():
    w = _w((64, 12)) * jnp.linspace(0.01, 3.0, 12)  # channels of very different ranges
    q, scale = quant.quantize_int8(w)
    assert q.dtype == jnp.int8 and scale.shape == (12,)
    np.testing.assert_allclose(scale, jnp.max(jnp.abs(w), axis=0) / 127, rtol=1e-6)
    err = jnp.abs(w - quant.dequantize_int8(q, scale))
    assert bool(jnp.all(err <= scale / 2 + 1e-7))
    assert int(jnp.max(jnp.abs(q))) == 127  # each channel's largest weight uses the whole range


def test_int8_zero_channel_stays_zero():
    w = jnp.zeros((4, 3)).at[:, 1].set(jnp.array([1.0, -2.0, 0.5, 0.0]))
    q, scale = quant.quantize_int8(w)
    np.testing.assert_array_equal(quant.dequantize_int8(q, scale)[:, 0], 0.0)


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_groups_with_shorter_last_group(group, asymmetric):
    """d_in = 344 (the main job's MLP): the last group holds 344 mod group rows, scaled by its own range."""
    w = _w((344, 6))
    nibbles, scale, zero = quant.quantize_int4(w, group, asymmetric=asymmetric)
    G = -(-344 // group)
    assert nibbles.shape == (344, 6) and scale.shape == (G, 6) and int(jnp.max(nibbles)) <= 15
    assert (zero is None) != asymmetric
    dq = quant.dequantize_int4(nibbles, scale, zero, group)
    err = jnp.abs(w - dq)
    step = quant._expand_groups(scale, 344, group)
    assert bool(jnp.all(err <= step / 2 + 1e-6))
    last = w[(G - 1) * group:]
    if asymmetric:
        hi, lo = max(float(jnp.max(last[:, 0])), 0.0), min(float(jnp.min(last[:, 0])), 0.0)
        np.testing.assert_allclose(scale[-1, 0], (hi - lo) / 15, rtol=1e-6)
    else:
        np.testing.assert_allclose(scale[-1, 0], jnp.max(jnp.abs(last[:, 0])) / 7, rtol=1e-6)


def test_int4_hand_computed():
    w = jnp.array([[0.7], [-0.3], [0.1], [-0.02]])
    nibbles, scale, _ = quant.quantize_int4(w, 2)
    np.testing.assert_allclose(scale[:, 0], [0.1, 0.1 / 7], rtol=1e-6)
    np.testing.assert_array_equal(nibbles[:, 0], [7 + 8, -3 + 8, 7 + 8, -1 + 8])  # -0.02 / (0.1 / 7) = -1.4
    nibbles, scale, zero = quant.quantize_int4(jnp.array([[1.0], [2.5], [4.0]]), 4, asymmetric=True)
    np.testing.assert_allclose(scale[0, 0], 4.0 / 15, rtol=1e-6)  # the range [0, 4] (0 included)
    assert int(zero[0, 0]) == 0
    np.testing.assert_array_equal(nibbles[:, 0], [4, 9, 15])  # 3.75 -> 4, 9.375 -> 9, 15


def test_quantized_matmul_equals_matmul_of_dequantized():
    x = _w((3, 344), seed=2)
    w = _w((344, 10), seed=3)
    nibbles, scale, zero = quant.quantize_int4(w, 64, asymmetric=True)
    packed = quant.pack_int4(nibbles)
    dq = quant.dequantize_int4(quant.unpack_int4(packed, 344), scale, zero, 64)
    np.testing.assert_allclose(x @ dq, x @ quant.dequantize_int4(nibbles, scale, zero, 64), rtol=0, atol=0)
    # Within the quantization error of the float product (each weight off by at most half a step).
    bound = jnp.abs(x) @ (quant._expand_groups(scale, 344, 64) / 2)
    assert bool(jnp.all(jnp.abs(x @ dq - x @ w) <= bound + 1e-4))


@pytest.mark.parametrize("group", [0, -64, 48, 100, 1.5, True])
def test_bad_group_refused(group):
    with pytest.raises(ValueError, match="positive power of two"):
        quant.check_group(group)


def test_fake_quantize_forward_rounds_backward_straight_through():
    w = _w((40, 4))
    g = _w((40, 4), seed=5)
    out, grad = jax.value_and_grad(lambda w: jnp.sum(quant.fake_quantize_int4(w, 32) * g))(w)
    nibbles, scale, zero = quant.quantize_int4(w, 32)
    np.testing.assert_allclose(out, jnp.sum(quant.dequantize_int4(nibbles, scale, zero, 32) * g), rtol=1e-6)
    np.testing.assert_array_equal(grad, g)


def test_kv_int8_scale_per_token_and_head():
    x = _w((2, 5, 3, 32)) * 4.0
    q, scale = quant.quantize_kv(x)
    assert q.dtype == jnp.int8 and scale.shape == (2, 5, 3) and scale.dtype == jnp.bfloat16
    err = jnp.abs(quant.dequantize_kv(q, scale, jnp.float32) - x)
    # half a step, plus what rounding the scale to bfloat16 (8 bits) can clip off the largest value
    assert bool(jnp.all(err <= scale.astype(jnp.float32)[..., None] * (0.5 + 127 * 2.0 ** -8)))
