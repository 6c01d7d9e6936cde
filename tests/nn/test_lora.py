"""LoRA adapters on lmlab's dense layers (lmlab.nn.lora)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.nn.linear import Linear
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


# LoRA dropout (lora.dropout): x -> dropout -> A -> B, with a dropout key (training) only.

def tiny_model_with_dropout(rate):
    return build_model(config_lib.load("configs/gpt_shakespeare.py", [*TINY, f"model.dropout={rate}"]).model, 50)


def adapted_model(dropout, targets="attn|mlp"):
    """A tiny model with rank-4 adapters whose B is nonzero (so the adapters change the output)."""
    model = tiny_model()
    lora.add_adapters(model, rank=4, alpha=8.0, targets=targets, seed=1, dropout=dropout)
    for i, (_, layer) in enumerate(sorted(lora.linear_paths(model).items())):
        if layer.lora_b is not None:
            layer.lora_b[...] = 0.1 * jax.random.normal(jax.random.key(10 + i), layer.lora_b[...].shape)
    return model


def test_dropout_zero_is_the_plain_adapter_in_training_too():
    layer = adapted_model(0.0).blocks[0].mlp.up
    x = jax.random.normal(jax.random.key(3), (3, 32))
    expected = x @ layer.kernel[...] + 2.0 * (x @ layer.lora_a[...]) @ layer.lora_b[...] + layer.bias[...]
    np.testing.assert_array_equal(layer(x, dropout_key=jax.random.key(4)), layer(x))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    model = adapted_model(0.0)
    np.testing.assert_array_equal(model(TOKENS, dropout_key=jax.random.key(5))[0], model(TOKENS)[0])


def test_adapter_keys_leave_the_models_own_dropout_masks_as_they_were():
    """With B = 0 the adapters add exactly nothing, whatever their dropout: a training pass with
    model dropout then equals the unadapted model's with the same key, bit for bit."""
    key = jax.random.key(7)
    base = tiny_model_with_dropout(0.2)
    adapted = tiny_model_with_dropout(0.2)
    lora.add_adapters(adapted, rank=4, alpha=8.0, targets="attn|mlp", seed=1, dropout=0.5)
    trained = base(TOKENS, dropout_key=key)[0]
    assert not np.array_equal(trained, base(TOKENS)[0])  # the model's dropout is on
    np.testing.assert_array_equal(adapted(TOKENS, dropout_key=key)[0], trained)


def test_evaluation_and_merging_never_drop():
    model, plain = adapted_model(0.5), adapted_model(0.0)
    evaluated = model(TOKENS)[0]
    np.testing.assert_array_equal(evaluated, plain(TOKENS)[0])  # no key: as without dropout
    np.testing.assert_array_equal(model(TOKENS)[0], evaluated)  # deterministic
    np.testing.assert_allclose(lora.merge_adapters(model)(TOKENS)[0], evaluated, rtol=1e-4, atol=1e-5)


def test_training_passes_drop_by_key():
    model = adapted_model(0.5, targets="attn/qkv|lm_head")
    a, b = jax.random.key(1), jax.random.key(2)
    out_a = model(TOKENS, dropout_key=a)[0]
    np.testing.assert_array_equal(model(TOKENS, dropout_key=a)[0], out_a)  # a key fixes the masks
    assert not np.allclose(model(TOKENS, dropout_key=b)[0], out_a, atol=1e-4)
    assert not np.allclose(out_a, model(TOKENS)[0], atol=1e-4)


def test_inverted_dropout_keeps_the_expected_adapter_output():
    """y = x W + scale * dropout(x) A B with W = 3, A = B = 1, scale = 1, x = 1 and rate 0.25: each
    output is 3 (input dropped) or 3 + 1 / 0.75 (kept, scaled up), and the mean stays 3 + 1."""
    layer = Linear(1, 1, use_bias=False, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.full((1, 1), 3.0)
    lora.add_adapters(layer, rank=1, alpha=1.0, targets="", seed=0, dropout=0.25)
    layer.lora_a[...], layer.lora_b[...] = jnp.ones((1, 1)), jnp.ones((1, 1))
    y = np.asarray(layer(jnp.ones((40_000, 1)), dropout_key=jax.random.key(0)))[:, 0]
    kept = np.isclose(y, 3.0 + 1.0 / 0.75, rtol=1e-6)
    assert np.all(kept | (y == 3.0))
    assert abs(1.0 - kept.mean() - 0.25) < 0.01  # the share dropped (std 0.002)
    assert abs(y.mean() - 4.0) < 0.01  # the mean of the undropped output, x W + x A B (std 0.003)
    np.testing.assert_array_equal(layer(jnp.ones((4, 1))), jnp.full((4, 1), 4.0))
