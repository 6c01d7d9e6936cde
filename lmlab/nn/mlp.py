"""Feed-forward blocks: GELU MLP (GPT-2) and SwiGLU (Llama)."""

from __future__ import annotations

import jax
from flax import nnx

from lmlab.nn.dropout import split_key
from lmlab.nn.linear import Linear


class GeluMLP(nnx.Module):
    def __init__(self, d_model: int, d_ff: int, *, use_bias: bool, dtype, rngs: nnx.Rngs,
                 out_init_std: float = 0.02, approximate: bool = True):
        self.up = Linear(d_model, d_ff, use_bias=use_bias, dtype=dtype, rngs=rngs, axes=("embed", "mlp"))
        self.down = Linear(d_ff, d_model, use_bias=use_bias, dtype=dtype, init_std=out_init_std, rngs=rngs,
                           axes=("mlp", "embed"))
        self.approximate = approximate

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`dropout_key`: the layers' LoRA dropout (training only; lmlab.nn.linear)."""
        k_up, k_down = split_key(dropout_key, 2)
        # tanh approximation: what GPT-2 used, and ~7% faster than erf on CPU. approximate=False
        # ("gelu_exact") is the erf form of BERT checkpoints, needed to match their outputs.
        hidden = jax.nn.gelu(self.up(x, dropout_key=k_up), approximate=self.approximate)
        return self.down(hidden, dropout_key=k_down)


class SwiGLU(nnx.Module):
    def __init__(self, d_model: int, d_ff: int, *, use_bias: bool, dtype, rngs: nnx.Rngs,
                 out_init_std: float = 0.02):
        self.gate = Linear(d_model, d_ff, use_bias=use_bias, dtype=dtype, rngs=rngs, axes=("embed", "mlp"))
        self.up = Linear(d_model, d_ff, use_bias=use_bias, dtype=dtype, rngs=rngs, axes=("embed", "mlp"))
        self.down = Linear(d_ff, d_model, use_bias=use_bias, dtype=dtype, init_std=out_init_std, rngs=rngs,
                           axes=("mlp", "embed"))

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`dropout_key`: the layers' LoRA dropout (training only; lmlab.nn.linear)."""
        k_gate, k_up, k_down = split_key(dropout_key, 3)
        hidden = jax.nn.silu(self.gate(x, dropout_key=k_gate)) * self.up(x, dropout_key=k_up)
        return self.down(hidden, dropout_key=k_down)


def make_mlp(kind: str, d_model: int, d_ff: int, **kwargs) -> nnx.Module:
    if kind == "gelu":
        return GeluMLP(d_model, d_ff, **kwargs)
    if kind == "gelu_exact":
        return GeluMLP(d_model, d_ff, approximate=False, **kwargs)
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, **kwargs)
    raise ValueError(f"unknown mlp '{kind}'; expected gelu, gelu_exact or swiglu")
