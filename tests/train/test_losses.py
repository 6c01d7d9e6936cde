import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmlab.train.losses import token_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_optax(smoothing):
    logits = jax.random.normal(jax.random.key(0), (2, 5, 11)) * 3
    targets = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)
    objective, nll = token_cross_entropy(logits, targets, label_smoothing=smoothing)
    labels = optax.smooth_labels(jax.nn.one_hot(targets, 11), smoothing)
    np.testing.assert_allclose(objective, optax.softmax_cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nll, optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-5)


def test_z_loss_adds_squared_log_partition():
    logits = jax.random.normal(jax.random.key(2), (3, 7))
    targets = jnp.array([0, 3, 6])
    base, _ = token_cross_entropy(logits, targets)
    with_z, _ = token_cross_entropy(logits, targets, z_loss=1e-2)
    np.testing.assert_allclose(with_z - base, 1e-2 * jax.nn.logsumexp(logits, -1) ** 2, rtol=1e-5)
