"""LoRA adapters on lmlab's dense layers (lmlab.nn.lora)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.nn import lora

TINY = ["model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=64",
        "model.max_len=64", "data.seq_len=32"]
TOKENS = jnp.arange(12)[None] % 50


def tiny_model(seed=0):
    return build_model(config_lib.load("configs/gpt_shakespeare.py", TINY).model, 50, seed=seed)


def test_adapters_start_as_the_base_model_and_add_x_a_b_times_scale():
    model = tiny_model()
    base = model(TOKENS)[0]
    paths = lora.add_adapters(model, rank=4, alpha=8.0, targets=r"blocks/\d+/attn", seed=1)
    assert paths == ["blocks/0/attn/out", "blocks/0/attn/qkv", "blocks/1/attn/out", "blocks/1/attn/qkv"]
    np.testing.assert_array_equal(model(TOKENS)[0], base)  # B = 0: the adapted model is the base
    layer = model.blocks[0].attn.qkv
    layer.lora_b[...] = jax.random.normal(jax.random.key(2), layer.lora_b[...].shape)
    x = jax.random.normal(jax.random.key(3), (3, 32))
    expected = x @ layer.kernel[...] + 2.0 * (x @ layer.lora_a[...]) @ layer.lora_b[...] + layer.bias[...]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    trained, total = lora.count(model)
    assert trained == 2 * (4 * (32 + 64) + 4 * (32 + 32)) and total == trained + sum(
        x.size for x in jax.tree.leaves(nnx.state(tiny_model(), nnx.Param)))


def test_merged_model_gives_the_adapted_logits():
    model = tiny_model()
    lora.add_adapters(model, rank=3, alpha=6.0, targets="attn|mlp", seed=1)
    adapters = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(x.size), x.shape), adapters))
    adapted = model(TOKENS)[0]
    merged = lora.merge_adapters(model)
    assert not jax.tree.leaves(nnx.state(merged, nnx.LoRAParam))
    np.testing.assert_allclose(merged(TOKENS)[0], adapted, rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_adapters_through_the_explicit_vjp_matmul():
    model = tiny_model()
    lora.add_adapters(model, rank=2, alpha=2.0, targets="mlp/up", seed=0)
    for block in model.blocks:  # nonzero B, so A's gradient is not zero by construction
        block.mlp.up.lora_b[...] = jnp.full(block.mlp.up.lora_b[...].shape, 0.1)
    layer = model.blocks[1].mlp.up
    grads = nnx.grad(lambda m: (m(TOKENS)[0] ** 2).mean(), argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    leaves = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(grads))
    assert len(leaves) == 4 and all(float(jnp.abs(g).max()) > 0 for _, g in leaves)

    # Against jax.grad of the same function written without lmlab's matmul.
    x = jax.random.normal(jax.random.key(1), (5, 32))

    def plain(a, b):
        return ((x @ layer.kernel[...] + (x @ a) @ b) ** 2).sum()

    def through_layer(layer):
        return ((layer(x) - layer.bias[...]) ** 2).sum()

    got = nnx.grad(through_layer, argnums=nnx.DiffState(0, nnx.LoRAParam))(layer)
    want = jax.grad(plain, argnums=(0, 1))(layer.lora_a[...], layer.lora_b[...])
    np.testing.assert_allclose(got.lora_a[...], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.lora_b[...], want[1], rtol=1e-4, atol=1e-5)


def test_targets_that_match_nothing_are_refused_naming_the_layers():
    with pytest.raises(ValueError, match="lora.targets='attention' matches no dense layer; the layers are: "
                                         "blocks/0/attn/out"):
        lora.add_adapters(tiny_model(), rank=2, alpha=1.0, targets="attention", seed=0)
