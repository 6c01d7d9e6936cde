"""Dense layers and embeddings.

`matmul` carries an explicit VJP: XLA:CPU runs the transposed dot_generals that autodiff emits far
slower than plain GEMMs on explicitly transposed operands (GUIDE.md section 7 measured 1.6x end to
end). On GPU/TPU the explicit form compiles to the same kernels, so it is used everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab import sharding


@jax.custom_vjp
def matmul(x_ND: jax.Array, w_DF: jax.Array) -> jax.Array:
    """x[..., D] @ w[D, F] -> [..., F]."""
    return jnp.dot(x_ND, w_DF)


def _matmul_fwd(x, w):
    return jnp.dot(x, w), (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    dx = jnp.dot(g, w.T)
    x_2d = x.reshape(-1, x.shape[-1])
    g_2d = g.reshape(-1, g.shape[-1])
    dw = jnp.dot(x_2d.T, g_2d)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(nnx.Module):
    """y = x W (+ b) with float32 parameters, computed in `dtype`.

    `axes` are the logical names of W's (input, output) dimensions, mapped to mesh axes by
    lmlab.sharding.RULES; the bias takes the output's. The default, ("embed", None), splits W's
    input dimension under FSDP and nothing under tensor parallelism: right for any layer, if not
    the most efficient one.
    """

    def __init__(self, d_in: int, d_out: int, *, use_bias: bool = True, dtype=jnp.float32,
                 init_std: float = 0.02, rngs: nnx.Rngs, axes: tuple[str | None, str | None] = ("embed", None)):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32) * init_std,
                                logical_axes=tuple(axes))
        self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32), logical_axes=(axes[1],)) if use_bias else None
        self.dtype = dtype
        self.in_axis, self.out_axis = axes
        # LoRA adapters (lmlab.nn.lora.add_adapters): y += lora_scale * x A B.
        self.lora_a, self.lora_b = nnx.data(None), nnx.data(None)
        self.lora_scale = 0.0

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = matmul(x, self.kernel[...].astype(self.dtype))
        if self.lora_a is not None:
            low_NR = matmul(x, self.lora_a[...].astype(self.dtype))
            y = y + self.lora_scale * matmul(low_NR, self.lora_b[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return _constrain_batch_first(y, self.out_axis)


class Embed(nnx.Module):
    """Token table; `attend` reuses it as the output projection when embeddings are tied."""

    def __init__(self, vocab_size: int, d_model: int, *, dtype=jnp.float32, init_std: float = 0.02,
                 rngs: nnx.Rngs):
        self.embedding = nnx.Param(
            jax.random.normal(rngs.params(), (vocab_size, d_model), jnp.float32) * init_std,
            logical_axes=("vocab", "embed"))
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Under FSDP, gather the table's embed dimension first (as GSPMD does for every weight
        # matrix): a lookup into a table split along embed would reshuffle the activations instead.
        table_VD = sharding.constrain(self.embedding[...], ("vocab", None))
        return _constrain_batch_first(jnp.take(table_VD, ids, axis=0).astype(self.dtype), "embed")

    def attend(self, x_BTD: jax.Array) -> jax.Array:
        table_VD = self.embedding[...].astype(self.dtype)
        return _constrain_batch_first(matmul(x_BTD.astype(self.dtype), table_VD.T), "vocab")


def _constrain_batch_first(y: jax.Array, out_axis: str | None) -> jax.Array:
    """Activations [batch, ..., features]: split over the batch mesh axes and the feature
    dimension's own (a no-op outside lmlab.sharding.activate, i.e. on one device)."""
    if y.ndim < 2:
        return y
    return sharding.constrain(y, ("batch",) + (None,) * (y.ndim - 2) + (out_axis,))
