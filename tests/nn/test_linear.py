import jax
import jax.numpy as jnp
import numpy as np

from lmlab.nn.linear import matmul


def test_matmul_custom_vjp_matches_autodiff():
    x = jax.random.normal(jax.random.key(0), (3, 5, 7))
    w = jax.random.normal(jax.random.key(1), (7, 4))
    g = jax.random.normal(jax.random.key(2), (3, 5, 4))
    ours = jax.grad(lambda x, w: jnp.sum(matmul(x, w) * g), argnums=(0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.einsum("btd,df->btf", x, w) * g), argnums=(0, 1))(x, w)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(matmul(x, w), x @ w, rtol=1e-6)


import pytest
from flax import nnx

from lmlab.compress import quant
from lmlab.nn.linear import Embed, Linear, QuantizedArray, Quantization


@pytest.mark.parametrize("fmt", [Quantization("int8"), Quantization("int4", 64), Quantization("int4", 32, True)])
def test_quantized_linear_dequantizes_on_the_fly(fmt):
    """d_in 344 (the main job's MLP): a shorter last int4 group; y = x dq(q(W)) + b exactly."""
    layer = Linear(344, 24, rngs=nnx.Rngs(params=0))
    layer.bias[...] = jax.random.normal(jax.random.key(4), (24,))
    w, b = layer.kernel[...], layer.bias[...]
    x = jax.random.normal(jax.random.key(5), (2, 3, 344))
    y_float = layer(x)
    layer.quantize(fmt)
    assert layer.kernel is None and isinstance(layer.kernel_q, QuantizedArray)
    parts = quant.quantize_weight(w, fmt.kind, group=fmt.group, asymmetric=fmt.asymmetric)
    dq = quant.dequantize_weight(parts, fmt.kind, d_in=344, group=fmt.group)
    np.testing.assert_array_equal(layer.kernel_q[...], parts["q"])
    np.testing.assert_allclose(layer(x), x @ dq + b, rtol=1e-6, atol=1e-6)
    # and within what rounding each weight by at most half its step can move it
    step_DF = (jnp.broadcast_to(parts["scale"], (344, 24)) if fmt.kind == "int8"
               else quant._expand_groups(parts["scale"], 344, fmt.group))
    assert bool(jnp.all(jnp.abs(layer(x) - y_float) <= jnp.abs(x) @ (step_DF / 2) + 1e-5))
    expect_q = (344, 24) if fmt.kind == "int8" else (172, 24)  # int4: two per byte
    assert layer.kernel_q[...].shape == expect_q
    assert (layer.kernel_zero is not None) == fmt.asymmetric


def test_quantized_linear_survives_split_merge():
    layer = Linear(40, 8, rngs=nnx.Rngs(params=0))
    layer.quantize(Quantization("int4", 32, True))
    graphdef, state = nnx.split(layer)
    leaves = {"/".join(map(str, p)): v.dtype for p, v in nnx.to_flat_state(state)}
    assert leaves == {"bias": jnp.float32, "kernel_q": jnp.uint8, "kernel_scale": jnp.float32, "kernel_zero": jnp.uint8}
    x = jax.random.normal(jax.random.key(1), (3, 40))
    np.testing.assert_array_equal(nnx.merge(graphdef, state)(x), layer(x))
    assert [v.dtype for v in jax.tree.leaves(nnx.state(layer, nnx.Param))] == [jnp.float32]  # the bias only


def test_quantized_embedding_rows_and_head():
    embed = Embed(50, 16, rngs=nnx.Rngs(params=0))
    table = embed.embedding[...]
    embed.quantize(Quantization("int8"))
    q, scale = quant.quantize_int8(table, axis=1)  # one scale per token (row)
    dq = quant.dequantize_int8(q, scale, axis=1)
    ids = jnp.array([[3, 49, 0]])
    np.testing.assert_allclose(embed(ids), dq[ids], rtol=1e-6)
    x = jax.random.normal(jax.random.key(2), (1, 2, 16))
    np.testing.assert_allclose(embed.attend(x), x @ dq.T, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(jnp.abs(embed.table() - table) <= scale[:, None] / 2 + 1e-7))


def test_fake_quantized_linear_forward_and_straight_through_gradient():
    """QAT: the forward is the int4-rounded layer's, dW is the float layer's (x^T g)."""
    layer = Linear(48, 6, rngs=nnx.Rngs(params=0))
    layer.fake = Quantization("int4", 32)
    rounded = Linear(48, 6, rngs=nnx.Rngs(params=0))
    rounded.quantize(Quantization("int4", 32))
    x = jax.random.normal(jax.random.key(3), (4, 48))
    g = jax.random.normal(jax.random.key(4), (4, 6))
    np.testing.assert_allclose(layer(x), rounded(x), rtol=1e-6, atol=1e-6)

    graphdef, params = nnx.split(layer)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x) * g))(params)
    np.testing.assert_allclose(grads["kernel"][...], x.T @ g, rtol=1e-5, atol=1e-5)
