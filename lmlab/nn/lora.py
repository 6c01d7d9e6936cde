"""LoRA (Hu et al. 2021): low-rank adapters on dense layers, y = x W + (alpha / r) x A B.

`add_adapters` gives every `Linear` whose path matches a regex two `nnx.LoRAParam`s, A [d_in, r]
(He-uniform) and B [r, d_out] (zeros, so the adapted model starts as the base), sharded by the
layer's own logical axes (A like W's input, B like its output). The base weights stay
`nnx.Param`s; the trainer optimizes the LoRAParams only (lmlab.train.state). `merge_adapters`
folds them into W for a plain model with the same outputs.

LoRA dropout (`lora.dropout`, PEFT's `lora_dropout`): y = x W + scale * dropout(x) A B, with
inverted scaling, so the expected output is the undropped one. It acts only in a training forward
pass, which passes a dropout key down the model (lmlab.nn.dropout); evaluation, decoding and a
merged model pass none and compute the plain product.

Why not qwix's LoraProvider: it adds the adapter product inside the dot_general it intercepts,
which for lmlab's Linear is inside the explicit-VJP `matmul` (lmlab.nn.linear); there the
adapters are values closed over by a custom_vjp function, and differentiating them fails
(jax UnexpectedTracerError, checked with qwix 0.1.8). The adapters here go through that same
`matmul`, as explicit operands.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab.nn.linear import Linear


def linear_paths(model: nnx.Module) -> dict[str, Linear]:
    """{"blocks/0/attn/qkv": layer, ...}: every dense layer of a model by its parameter path."""
    return {"/".join(map(str, path)): node for path, node in nnx.iter_graph(model) if isinstance(node, Linear)}


def add_adapters(model: nnx.Module, *, rank: int, alpha: float, targets: str, seed: int,
                 dropout: float = 0.0) -> list[str]:
    """Adds rank-`rank` adapters to the dense layers whose path matches `targets` (re.search);
    returns their paths. Raises ValueError when none matches. `dropout`: the rate at which a
    training forward pass (one given a dropout key) drops the adapters' input."""
    pattern = re.compile(targets)
    layers = linear_paths(model)
    chosen = sorted(path for path in layers if pattern.search(path))
    if not chosen:
        raise ValueError(f"lora.targets={targets!r} matches no dense layer; the layers are: "
                         f"{', '.join(sorted(layers))}")
    key = jax.random.key(seed)
    for i, path in enumerate(chosen):
        layer = layers[path]
        d_in, d_out = layer.kernel[...].shape
        bound = math.sqrt(6.0 / d_in)  # He uniform, as the LoRA paper's reference code
        a = jax.random.uniform(jax.random.fold_in(key, i), (d_in, rank), jnp.float32, -bound, bound)
        layer.lora_a = nnx.LoRAParam(a, logical_axes=(layer.in_axis, None))
        layer.lora_b = nnx.LoRAParam(jnp.zeros((rank, d_out), jnp.float32), logical_axes=(None, layer.out_axis))
        layer.lora_scale, layer.lora_dropout = alpha / rank, dropout
    return chosen


def merge_adapters(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its layer's kernel (W + scale * A B) and removes it, in place."""
    for layer in linear_paths(model).values():
        if layer.lora_a is not None:
            delta = layer.lora_scale * (layer.lora_a[...] @ layer.lora_b[...])
            layer.kernel[...] = layer.kernel[...] + delta
            layer.lora_a, layer.lora_b = nnx.data(None), nnx.data(None)
            layer.lora_scale, layer.lora_dropout = 0.0, 0.0
    return model


def count(model: nnx.Module) -> tuple[int, int]:
    """(trainable adapter parameters, all parameters)."""
    adapters = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
    return adapters, sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
