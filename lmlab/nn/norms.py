"""LayerNorm and RMSNorm, computed in float32 whatever the activation dtype (bf16 variance is lossy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class LayerNorm(nnx.Module):
    def __init__(self, d: int, *, eps: float = 1e-5, use_bias: bool = True):
        self.scale = nnx.Param(jnp.ones((d,), jnp.float32), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((d,), jnp.float32), logical_axes=("norm",)) if use_bias else None
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, d: int, *, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((d,), jnp.float32), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps) * self.scale[...]
        return y.astype(x.dtype)


def make_norm(kind: str, d: int, *, eps: float, use_bias: bool = True) -> nnx.Module:
    if kind == "layernorm":
        return LayerNorm(d, eps=eps, use_bias=use_bias)
    if kind == "rmsnorm":
        return RMSNorm(d, eps=eps)
    raise ValueError(f"unknown norm '{kind}'; expected layernorm or rmsnorm")
