"""The config's `quant` section applied to a built model: the one place that reads it.

    quant.weights     none | bfloat16 | int8 | int4   weights stored in a narrower format (post-training);
                      bfloat16 rounds every parameter (norms and biases too) and still computes
                      in model.dtype, so it measures the rounding alone
    quant.group       int4's group size along the input dimension (a power of two)
    quant.asymmetric  int4 with a zero point per group
    quant.embeddings  int8 | float         the token embeddings and the output head (tied or not)
    quant.kv          none | int8          the KV cache while decoding
    quant.qat         none | int4          train with fake int4 weights (straight-through gradient)

A quantized model is an ordinary lmlab model whose dense layers hold `QuantizedArray` leaves
(lmlab.nn.linear) instead of float kernels, so nnx.split / merge, Orbax checkpoints and
lmlab.runs.load_run treat it like any other. The embeddings and the output head follow their own
policy because they are the most sensitive matrices of a small model (with a 2,048-token vocabulary
they hold 40% of the main job's parameters): int8 per row by default, or float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab.compress.quant import check_group
from lmlab.nn.attention import SelfAttention
from lmlab.nn.linear import FLOAT, Embed, Linear, Quantization

HEADS = ("lm_head",)  # dense layers that follow quant.embeddings: the output projection


def is_quantized(quant) -> bool:
    """Whether a run's config stores quantized weights or a quantized KV cache."""
    return quant is not None and (quant.weights != "none" or quant.kv != "none")


def _formats(quant) -> tuple[Quantization, Quantization]:
    """(dense layers' format, embeddings' and head's format) of quant.weights, or of quant.qat."""
    kind = quant.weights if quant.weights != "none" else quant.qat
    if kind in ("none", "bfloat16"):
        return FLOAT, FLOAT
    dense = Quantization(kind, check_group(quant.group) if kind == "int4" else 0, quant.asymmetric and kind == "int4")
    return dense, Quantization("int8") if quant.embeddings == "int8" else FLOAT


def quantize_model(model: nnx.Module, quant) -> nnx.Module:
    """Applies `quant` (the config section; None: nothing) to `model` in place and returns it.

    quant.weights rounds the float weights the model holds now (a trained model, or an abstract
    one under nnx.eval_shape for restoring a quantized checkpoint); quant.qat only marks layers,
    whose float weights then train through fake quantization.
    """
    if quant is None:
        return model
    if quant.weights == "bfloat16":
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), params))
    dense, table = _formats(quant)
    nodes = [("/".join(map(str, path)), node) for path, node in nnx.iter_graph(model)]
    for path, node in nodes:
        if isinstance(node, (Linear, Embed)):
            fmt = table if isinstance(node, Embed) or path.split("/")[-1] in HEADS else dense
            if fmt.kind == "float":
                continue
            if quant.weights != "none":
                node.quantize(fmt)
            else:
                node.fake = fmt
        elif isinstance(node, SelfAttention):
            node.kv_quant = quant.kv
    return model


def describe(quant) -> str:
    """One line: what is quantized how (printed by `lmlab quantize` and at training with QAT)."""
    kv_text = "int8, one scale per token and head" if quant.kv == "int8" else "the compute dtype"
    if quant.weights == "bfloat16":
        return f"every parameter stored in bfloat16 (computed in the model's dtype); KV cache: {kv_text}"
    dense, table = _formats(quant)
    what = "fake-quantized while training (QAT)" if quant.weights == "none" and quant.qat != "none" else "stored"
    dense_text = dense.kind if dense.kind != "int4" else (
        f"int4 groups of {dense.group} ({'asymmetric, zero points' if dense.asymmetric else 'symmetric'})")
    table_text = "int8, one scale per row" if table.kind == "int8" else "float32"
    return (f"dense layers: {dense_text}, {what}; token embeddings and output head: {table_text} "
            f"(quant.embeddings); norms, biases and position tables: float32; KV cache: {kv_text}")
