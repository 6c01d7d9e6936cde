import jax
import jax.numpy as jnp
import pytest

from lmlab import config as config_lib
from lmlab.train.optimizer import decay_mask, make_optimizer, make_schedule


def train_config(**overrides):
    c = config_lib.load_config_file("configs/gpt_shakespeare.py").train
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_schedule_warmup_then_cosine_to_floor():
    t = train_config(steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    s = make_schedule(t)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(55)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-4)  # halfway through the cosine
    assert float(s(100)) == pytest.approx(0.1)


def test_weight_decay_only_on_kernels():
    params = {"embed": {"embedding": jnp.ones((4, 2))}, "blocks": {0: {"mlp": {"up": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
                                                                    "norm1": {"scale": jnp.ones(2)}}}}
    mask = decay_mask(params)
    assert mask["blocks"][0]["mlp"]["up"]["kernel"] is True
    assert mask["blocks"][0]["mlp"]["up"]["bias"] is False
    assert mask["blocks"][0]["norm1"]["scale"] is False
    assert mask["embed"]["embedding"] is False
    # With zero gradients only decayed leaves move.
    tx = make_optimizer(train_config(weight_decay=0.5, warmup_steps=0, learning_rate=0.1, grad_clip=0.0))
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert float(jnp.abs(updates["blocks"][0]["mlp"]["up"]["kernel"]).sum()) > 0
    assert float(jnp.abs(updates["embed"]["embedding"]).sum()) == 0
    assert float(jnp.abs(updates["blocks"][0]["norm1"]["scale"]).sum()) == 0
