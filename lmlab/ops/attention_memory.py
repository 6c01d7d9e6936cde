"""Compile-time memory of attention forward + backward, read from XLA's buffer assignment.

Nothing runs: the function is lowered and compiled for abstract inputs, so sizes far beyond the
machine's memory can be compared in seconds. Shared by the tests and `lmlab bench attention`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmlab.ops.attention import attention


class CompiledMemory(NamedTuple):
    """Bytes XLA reserves for one compiled call (see `jax.stages.Compiled.memory_analysis`)."""

    argument_bytes: int  # inputs (q, k, v, and the loss weights)
    output_bytes: int  # the loss and the gradients
    temp_bytes: int  # scratch live at some point during the call: where O(T*S) shows up
    peak_bytes: int  # arguments + outputs + temps, minus outputs aliasing arguments


def compiled_memory(
    impl: str,
    T: int,
    S: int | None = None,
    *,
    B: int = 1,
    N: int = 8,
    K: int | None = None,
    H: int = 64,
    dtype=jnp.float32,
    causal: bool = True,
    block_q: int = 128,
    block_k: int = 128,
    backward: bool = True,
) -> CompiledMemory:
    """Compiles `attention(impl=...)` (and its gradient w.r.t. q, k, v if `backward`) and reports
    XLA's memory numbers. S defaults to T, K to N (MHA)."""
    S = T if S is None else S
    K = N if K is None else K
    q = jax.ShapeDtypeStruct((B, T, N, H), dtype)
    kv = jax.ShapeDtypeStruct((B, S, K, H), dtype)

    def loss(q_BTNH, k_BSKH, v_BSKH, w_BTNH):
        out_BTNH = attention(
            q_BTNH, k_BSKH, v_BSKH, causal=causal, impl=impl, block_q=block_q, block_k=block_k
        )
        # A weighted sum, not a plain sum, so the output cotangent is a real [B, T, N, H] array.
        return jnp.sum(out_BTNH.astype(jnp.float32) * w_BTNH)

    fn = jax.grad(loss, argnums=(0, 1, 2)) if backward else loss
    stats = jax.jit(fn).lower(q, kv, kv, q).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"backend {jax.default_backend()!r} reports no compiled memory analysis")
    args, outs = stats.argument_size_in_bytes, stats.output_size_in_bytes
    temps = stats.temp_size_in_bytes
    return CompiledMemory(args, outs, temps, args + outs + temps - stats.alias_size_in_bytes)


def compiled_peak_bytes(impl: str, T: int, **kwargs) -> int:
    """Peak bytes (arguments + outputs + temporaries) of compiled attention fwd+bwd at length T."""
    return compiled_memory(impl, T, **kwargs).peak_bytes
