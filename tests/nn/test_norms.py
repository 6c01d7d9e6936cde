import jax
import numpy as np

from lmlab.nn.norms import LayerNorm, RMSNorm


def test_layernorm_and_rmsnorm_match_formulas():
    x = np.asarray(jax.random.normal(jax.random.key(0), (4, 16))) * 3 + 1
    ln = LayerNorm(16, eps=1e-5)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln(x), expected, rtol=1e-5, atol=1e-5)
    rms = RMSNorm(16, eps=1e-6)
    np.testing.assert_allclose(rms(x), x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6), rtol=1e-5, atol=1e-5)
