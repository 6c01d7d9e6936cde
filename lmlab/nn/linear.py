"""Dense layers and embeddings.

`matmul` carries an explicit VJP: XLA:CPU runs the transposed dot_generals that autodiff emits far
slower than plain GEMMs on explicitly transposed operands (GUIDE.md section 7 measured 1.6x end to
end). On GPU/TPU the explicit form compiles to the same kernels, so it is used everywhere.

Quantized weights (lmlab.models.quantize, lmlab.compress.quant): a layer whose `stored` format is
int8 or int4 holds its kernel as a `QuantizedArray` payload with scales (and zero points) instead
of the float `kernel`, and dequantizes it on the fly in each call; `fake` rounds a float kernel the
same way in the forward pass with a straight-through gradient (quantization-aware training).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab import sharding
from lmlab.compress import quant
from lmlab.nn.dropout import dropout


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


class QuantizedArray(nnx.Variable):
    """A quantized weight's integer payload, scales or zero points. Not an nnx.Param: optimizers,
    LoRA and parameter counts leave it alone; checkpoints and nnx.split/merge carry it like any
    variable."""


@dataclasses.dataclass(frozen=True)
class Quantization:
    """How a weight is stored (or fake-quantized): kind float | int8 | int4; int4's group size
    along the input dimension and whether it has zero points."""
    kind: str = "float"
    group: int = 0
    asymmetric: bool = False


FLOAT = Quantization()


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
        # LoRA adapters (lmlab.nn.lora.add_adapters): y += lora_scale * dropout(x) A B.
        self.lora_a, self.lora_b = nnx.data(None), nnx.data(None)
        self.lora_scale, self.lora_dropout = 0.0, 0.0
        self.d_in, self.d_out = d_in, d_out
        self.stored, self.fake = FLOAT, FLOAT  # see the module docstring
        self.kernel_q, self.kernel_scale, self.kernel_zero = nnx.data(None), nnx.data(None), nnx.data(None)

    def weight(self) -> jax.Array:
        """The [d_in, d_out] float32 kernel: as trained, dequantized, or fake-quantized."""
        if self.stored.kind != "float":
            parts = {"q": self.kernel_q[...], "scale": self.kernel_scale[...]}
            if self.kernel_zero is not None:
                parts["zero"] = self.kernel_zero[...]
            return quant.dequantize_weight(parts, self.stored.kind, d_in=self.d_in, group=self.stored.group)
        f = self.fake
        return quant.fake_quantize_weight(self.kernel[...], f.kind, group=f.group, asymmetric=f.asymmetric)

    def quantize(self, q: Quantization) -> None:
        """Replaces the float kernel by its `q` payload and scales, in place."""
        if self.stored.kind != "float":
            raise ValueError(f"layer already holds {self.stored.kind} weights")
        parts = quant.quantize_weight(self.kernel[...], q.kind, group=q.group, asymmetric=q.asymmetric)
        per_group = (None, self.out_axis) if q.kind == "int4" else (self.out_axis,)
        self.kernel_q = QuantizedArray(parts["q"], logical_axes=(self.in_axis, self.out_axis))
        self.kernel_scale = QuantizedArray(parts["scale"], logical_axes=per_group)
        if "zero" in parts:
            self.kernel_zero = QuantizedArray(parts["zero"], logical_axes=per_group)
        self.kernel = nnx.data(None)
        self.stored = q

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`dropout_key` (training only) drops the adapter's input at rate `lora_dropout`, as in the
        LoRA paper and PEFT: x -> dropout -> A -> B; the base product x W never sees it."""
        x = x.astype(self.dtype)
        y = matmul(x, self.weight().astype(self.dtype))
        if self.lora_a is not None:
            low_NR = matmul(dropout(x, self.lora_dropout, dropout_key), self.lora_a[...].astype(self.dtype))
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
        # int8 with one scale per token (row): also per output channel of `attend`.
        self.stored, self.fake = FLOAT, FLOAT
        self.embedding_q, self.embedding_scale = nnx.data(None), nnx.data(None)

    def table(self) -> jax.Array:
        """The [V, D] float32 table: as trained, dequantized, or fake-quantized."""
        if self.stored.kind == "int8":
            return quant.dequantize_int8(self.embedding_q[...], self.embedding_scale[...], axis=1)
        table_VD = self.embedding[...]
        return table_VD if self.fake.kind == "float" else quant.fake_quantize_int8(table_VD, axis=1)

    def quantize(self, q: Quantization) -> None:
        """int8 rows in place of the float table."""
        if q.kind != "int8" or self.stored.kind != "float":
            raise ValueError(f"embeddings quantize from float to int8 only (asked {self.stored.kind} -> {q.kind})")
        q_VD, scale_V = quant.quantize_int8(self.embedding[...], axis=1)
        self.embedding_q = QuantizedArray(q_VD, logical_axes=("vocab", "embed"))
        self.embedding_scale = QuantizedArray(scale_V, logical_axes=("vocab",))
        self.embedding = nnx.data(None)
        self.stored = q

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Under FSDP, gather the table's embed dimension first (as GSPMD does for every weight
        # matrix): a lookup into a table split along embed would reshuffle the activations instead.
        if self.stored.kind == "int8":  # dequantize the looked-up rows only
            q_VD = sharding.constrain(self.embedding_q[...], ("vocab", None))
            rows = quant.dequantize_int8(jnp.take(q_VD, ids, axis=0), jnp.take(self.embedding_scale[...], ids), axis=-1)
            return _constrain_batch_first(rows.astype(self.dtype), "embed")
        table_VD = sharding.constrain(self.table(), ("vocab", None))
        return _constrain_batch_first(jnp.take(table_VD, ids, axis=0).astype(self.dtype), "embed")

    def attend(self, x_BTD: jax.Array) -> jax.Array:
        table_VD = self.table().astype(self.dtype)
        return _constrain_batch_first(matmul(x_BTD.astype(self.dtype), table_VD.T), "vocab")


def _constrain_batch_first(y: jax.Array, out_axis: str | None) -> jax.Array:
    """Activations [batch, ..., features]: split over the batch mesh axes and the feature
    dimension's own (a no-op outside lmlab.sharding.activate, i.e. on one device)."""
    if y.ndim < 2:
        return y
    return sharding.constrain(y, ("batch",) + (None,) * (y.ndim - 2) + (out_axis,))
