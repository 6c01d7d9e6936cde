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
