"""lmlab.ops.attention: every implementation against the naive reference, and the reference
against plain numpy; masks, fully-masked rows, causality, KV-cache offsets, memory, dispatch."""

from __future__ import annotations

import dataclasses

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab.ops.attention import (
    IMPLS,
    attention,
    make_causal_mask,
    make_padding_mask,
    make_segment_mask,
    padding_mask_from_ids,
    select_impl,
)
from lmlab.ops.attention_memory import compiled_memory

FP32_TOL = dict(rtol=1e-5, atol=1e-5)
# bf16 keeps 8 mantissa bits (relative step 2^-8 ~ 0.4%); two implementations rounding p, dS and
# their outputs at different points differ by a few steps on O(1) values.
BF16_TOL = dict(rtol=2e-2, atol=2e-2)


@pytest.fixture(autouse=True)
def _full_fp32_matmuls():
    """GPUs may run fp32 matmuls in TF32 by default, far outside FP32_TOL; ask for true fp32."""
    with jax.default_matmul_precision("highest"):
        yield


def _jit(fn, **kwargs):
    """jax.jit for tiny test shapes, where compiling dominates the suite's time: LLVM at -O0 halves
    it. The HLO (fusions, op order) is unchanged, and both sides of every comparison use it."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kwargs)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    T: int = 37
    S: int = 37
    N: int = 4
    K: int = 4
    H: int = 8
    B: int = 2
    causal: bool = False
    mask: str = "none"  # none | padding [B,1,1,S] | full [B,1,T,S] | heads [B,N,T,S]
    q_offset: int = 0
    traced_offset: bool = False
    dtype: str = "float32"
    block_q: int = 16
    block_k: int = 16


CASES = [
    Case("plain", T=32, S=53),  # no mask at all: only the tiling hides the padded keys
    Case("causal", causal=True),
    Case("key_padding", mask="padding"),
    Case("causal_padding", causal=True, mask="padding"),
    Case("cross", T=37, S=53, mask="padding"),
    Case("cross_causal_odd", T=37, S=53, causal=True),
    Case("gqa", N=4, K=2, causal=True, mask="padding"),
    Case("mqa", N=4, K=1, causal=True, mask="padding"),
    Case("full_mask", T=37, S=53, mask="full"),
    Case("head_mask_gqa", T=37, S=53, N=4, K=2, causal=True, mask="heads"),
    Case("q_offset_int", T=21, S=53, causal=True, q_offset=20, block_q=8, block_k=16),
    Case("q_offset_traced", T=5, S=53, causal=True, q_offset=30, traced_offset=True,
         mask="padding"),
    Case("default_blocks", T=37, S=53, N=4, K=2, causal=True, block_q=128, block_k=128),
    Case("bf16", causal=True, mask="padding", N=4, K=2, H=16, dtype="bfloat16"),
]


def _inputs(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(case.dtype)
    q = jnp.asarray(rng.normal(size=(case.B, case.T, case.N, case.H)), dtype)
    k = jnp.asarray(rng.normal(size=(case.B, case.S, case.K, case.H)), dtype)
    v = jnp.asarray(rng.normal(size=(case.B, case.S, case.K, case.H)), dtype)
    w = jnp.asarray(rng.normal(size=(case.B, case.T, case.N, case.H)), jnp.float32)
    if case.mask == "padding":
        mask = make_padding_mask(jnp.array([case.S, case.S // 2 + 1])[: case.B], case.S)
    elif case.mask in ("full", "heads"):
        heads = case.N if case.mask == "heads" else 1
        mask = jnp.asarray(rng.random((case.B, heads, case.T, case.S)) < 0.7)
    else:
        mask = None
    return q, k, v, w, mask


def _out_and_grads(case: Case, impl: str, q, k, v, w, mask):
    """Output and d(sum(w * out))/d(q, k, v), one jit per (case, impl)."""

    def run(q, k, v, w, mask, q_offset):
        def f(q, k, v):
            return attention(
                q, k, v, mask=mask, causal=case.causal, q_offset=q_offset, impl=impl,
                block_q=case.block_q, block_k=case.block_k,
            )

        out, vjp = jax.vjp(f, q, k, v)
        return (out, *vjp(w.astype(out.dtype)))

    if case.traced_offset:
        results = _jit(run)(q, k, v, w, mask, jnp.int32(case.q_offset))
    else:
        results = _jit(run, static_argnums=5)(q, k, v, w, mask, case.q_offset)
    return [np.asarray(x.astype(jnp.float32)) for x in results]


def _assert_all_close(actual, expected, tol):
    for name, a, e in zip(("out", "dq", "dk", "dv"), actual, expected):
        assert np.isfinite(a).all(), name
        np.testing.assert_allclose(a, e, err_msg=name, **tol)


# Pallas runs its kernels in interpret mode on CPU: slow per call, but the same kernel programs as
# on GPU, so every case runs (tiles are at least 16 rows there, so small blocks become 16).
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("impl", ["blockwise", "pallas"])
def test_tiled_impls_match_naive(impl, case):
    q, k, v, w, mask = _inputs(case)
    expected = _out_and_grads(case, "naive", q, k, v, w, mask)
    actual = _out_and_grads(case, impl, q, k, v, w, mask)
    _assert_all_close(actual, expected, BF16_TOL if case.dtype == "bfloat16" else FP32_TOL)


# Lowering for CUDA needs no GPU: this runs Pallas's Triton lowering of all three kernels (forward,
# dQ, dK/dV) and catches what the interpreter accepts but Triton does not (non-power-of-two loads,
# chained ref indexing, ...). Compiling to PTX and running still need a GPU (the `gpu` tests).
@pytest.mark.parametrize("case", [
    Case("lower_plain_bf16", T=128, S=128, H=64, dtype="bfloat16"),
    Case("lower_decode_mqa", T=1, S=53, N=4, K=1, H=40, causal=True, q_offset=7, traced_offset=True,
         mask="padding"),
    Case("lower_heads_gqa_fp32", T=37, S=53, N=4, K=2, H=32, causal=True, mask="heads"),
    Case("lower_full_mask", T=37, S=53, H=64, dtype="bfloat16", mask="full"),
], ids=lambda c: c.name)
def test_pallas_kernels_lower_to_triton(case, monkeypatch):
    import lmlab.ops.attention_pallas as attention_pallas

    monkeypatch.setattr(attention_pallas.jax, "default_backend", lambda: "gpu")
    q, k, v, w, mask = _inputs(case)

    def out_and_grads(q, k, v, mask, q_offset):
        out, vjp = jax.vjp(lambda q, k, v: attention(
            q, k, v, mask=mask, causal=case.causal, q_offset=q_offset, impl="pallas"), q, k, v)
        return out, vjp(out)

    hlo = jax.jit(out_and_grads).trace(q, k, v, mask, jnp.int32(case.q_offset)).lower(
        lowering_platforms=("cuda",)).as_text()
    for kernel in ("lmlab_flash_forward", "lmlab_flash_dq", "lmlab_flash_dkv"):
        assert f'name = "{kernel}"' in hlo, kernel
    assert hlo.count("__gpu$xla.gpu.triton") == 3


def test_pallas_on_tpu_refuses_what_jax_tpu_kernel_cannot_do(monkeypatch):
    """On TPU, impl='pallas' is jax's flash kernel: masks and offsets get a clear error."""
    import lmlab.ops.attention_pallas as attention_pallas

    monkeypatch.setattr(attention_pallas.jax, "default_backend", lambda: "tpu")
    q, k, v, _, mask = _inputs(Case("tpu_refuse", T=8, S=8, mask="padding"))
    with pytest.raises(NotImplementedError, match="TPU"):
        attention(q, k, v, mask=mask, impl="pallas")
    with pytest.raises(NotImplementedError, match="TPU"):
        attention(q[:, :1], k, v, causal=True, q_offset=3, impl="pallas")
    ids = jnp.ones((2, 8), jnp.int32)
    with pytest.raises(NotImplementedError, match="segment ids"):
        attention(q, k, v, q_segment_ids=ids, kv_segment_ids=ids, impl="pallas")


def test_auto_matches_naive():
    case = Case("auto", causal=True, mask="padding", N=4, K=2)
    q, k, v, w, mask = _inputs(case)
    _assert_all_close(
        _out_and_grads(case, "auto", q, k, v, w, mask),
        _out_and_grads(case, "naive", q, k, v, w, mask),
        FP32_TOL,
    )


def _numpy_attention(q, k, v, allowed_BNTS, scale):
    """Independent reference: float64 loops over batch and head, dense numpy softmax."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, N, H = q.shape
    group = N // k.shape[2]
    out = np.zeros((B, T, N, H))
    for b in range(B):
        for n in range(N):
            scores = q[b, :, n] @ k[b, :, n // group].T * scale
            allowed = np.broadcast_to(allowed_BNTS, (B, N, T, k.shape[1]))[b, n]
            for t in range(T):
                if not allowed[t].any():
                    continue  # fully masked row: zeros
                row = np.where(allowed[t], scores[t], -np.inf)
                p = np.exp(row - row.max())
                out[b, t, n] = (p / p.sum()) @ v[b, :, n // group]
    return out


def test_naive_matches_numpy():
    case = Case("numpy", T=7, S=9, N=4, K=2, H=8, causal=True, q_offset=2)
    q, k, v, _, _ = _inputs(case)
    # Left padding: with causality query 0 sees only padding keys, covering a fully-masked row.
    mask = padding_mask_from_ids(jnp.array([[0, 0, 0, 5, 6, 7, 8, 9, 1], [4] * 9]), pad_id=0)
    out = attention(q, k, v, mask=mask, causal=True, q_offset=2, impl="naive")
    allowed = np.asarray(mask) & np.tril(np.ones((7, 9), bool), k=2)
    expected = _numpy_attention(q, k, v, allowed, scale=1 / np.sqrt(8))
    assert not np.asarray(allowed[0, 0, 0]).any()
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["naive", "blockwise", "pallas"])
def test_fully_masked_rows_give_zeros_and_finite_grads(impl):
    # Sequence 0 is left-padded by 20 (with causality its first 20 queries see nothing: more than a
    # whole 16-row tile); sequence 1 is all padding.
    case = Case("masked", T=37, S=37, causal=True)
    q, k, v, w, _ = _inputs(case)
    ids = np.ones((2, 37), np.int32)
    ids[0, :20] = 0
    ids[1, :] = 0
    mask = padding_mask_from_ids(jnp.asarray(ids), pad_id=0)
    out, dq, dk, dv = _out_and_grads(case, impl, q, k, v, w, mask)
    assert (out[0, :20] == 0).all() and (out[1] == 0).all()
    assert np.abs(out[0, 20:]).sum() > 0
    for g in (dq, dk, dv):
        assert np.isfinite(g).all()
    # No gradient flows through rows that attend to nothing, nor into keys nobody may attend.
    assert (dq[0, :20] == 0).all() and (dq[1] == 0).all()
    assert (dk[0, :20] == 0).all() and (dv[1] == 0).all()


_CAUSAL_CASE = Case("invariance", T=37, S=37, N=4, K=2, causal=True)


@pytest.fixture(scope="module")
def causal_fns():
    return {
        impl: _jit(
            lambda q, k, v, impl=impl: attention(
                q, k, v, causal=True, impl=impl, block_q=16, block_k=16
            )
        )
        for impl in ("naive", "blockwise", "pallas")
    }


@hypothesis.settings(max_examples=6, deadline=None, derandomize=True)
@hypothesis.given(i=st.integers(0, _CAUSAL_CASE.S - 2), seed=st.integers(0, 2**16))
def test_causal_output_ignores_future_keys(causal_fns, i, seed):
    q, k, v, _, _ = _inputs(_CAUSAL_CASE)
    noise = np.random.default_rng(seed).normal(size=k.shape) * 10
    future = (np.arange(_CAUSAL_CASE.S) > i)[None, :, None, None]
    k2, v2 = k + np.where(future, noise, 0), v - np.where(future, noise, 0)
    for fn in causal_fns.values():
        before, after = np.asarray(fn(q, k, v)), np.asarray(fn(q, k2, v2))
        np.testing.assert_allclose(after[:, : i + 1], before[:, : i + 1], rtol=0, atol=1e-6)
        assert not np.allclose(after[:, i + 1 :], before[:, i + 1 :])


@pytest.mark.parametrize("impl", ["naive", "blockwise", "pallas"])
def test_kv_cache_decode_step_equals_full_causal_row(impl):
    """T=1 query at a traced position of a fixed-length cache whose later slots hold garbage."""
    case = Case("decode", T=37, S=37, N=4, K=1, causal=True)
    q, k, v, _, _ = _inputs(case)
    full = np.asarray(attention(q, k, v, causal=True, impl="naive"))

    @_jit
    def decode(q_B1NH, index):
        garbage = (jnp.arange(case.S) > index)[None, :, None, None] * 1e3
        return attention(
            q_B1NH, k + garbage, v - garbage, causal=True, q_offset=index, impl=impl,
            block_q=16, block_k=16,
        )

    for index in (0, 15, 16, 36):
        step = decode(q[:, index : index + 1], jnp.int32(index))
        np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, index], **FP32_TOL)


def test_blockwise_peak_memory_is_8x_below_naive_at_8192():
    """Compile-only: T=S=8192, B=1, N=8, H=64, fp32, causal, forward + backward."""
    B, N, T = 1, 8, 8192
    naive = compiled_memory("naive", T, B=B, N=N, H=64)
    blockwise = compiled_memory("blockwise", T, B=B, N=N, H=64)
    # Sanity of the measurement: naive holds at least one fp32 [B, N, T, S] matrix (2 GiB).
    assert naive.temp_bytes >= B * N * T * T * 4
    assert naive.peak_bytes >= 8 * blockwise.peak_bytes, (naive, blockwise)
    assert naive.temp_bytes >= 8 * blockwise.temp_bytes, (naive, blockwise)


def test_select_impl_rule():
    f32, bf16 = jnp.float32, jnp.bfloat16
    assert select_impl(backend="cpu", T=128, S=128, H=64, dtype=f32) == "naive"
    assert select_impl(backend="cpu", T=128, S=128, H=64, dtype=bf16) == "naive"
    assert select_impl(backend="cpu", T=4096, S=4096, H=64, dtype=bf16) == "blockwise"
    assert select_impl(backend="cpu", T=1, S=65536, H=64, dtype=f32) == "naive"  # decode
    assert select_impl(backend="tpu", T=4096, S=4096, H=64, dtype=f32) == "blockwise"
    assert select_impl(backend="gpu", T=4096, S=4096, H=64, dtype=bf16) == "cudnn"
    assert select_impl(backend="gpu", T=4096, S=4096, H=64, dtype=jnp.float16) == "cudnn"
    assert select_impl(backend="gpu", T=4096, S=4096, H=64, dtype=f32) == "blockwise"
    assert select_impl(backend="gpu", T=512, S=512, H=64, dtype=f32) == "naive"
    assert select_impl(backend="gpu", T=4096, S=4096, H=60, dtype=bf16) == "blockwise"  # H % 8
    assert select_impl(backend="gpu", T=4096, S=4096, H=256, dtype=bf16) == "blockwise"
    # A mask becomes a cuDNN bias, whose backward needs even lengths.
    odd = dict(backend="gpu", T=4095, S=4096, H=64, dtype=bf16)
    assert select_impl(**odd, needs_bias=False) == "cudnn"
    assert select_impl(**odd, needs_bias=True) == "blockwise"


def test_mask_helpers():
    np.testing.assert_array_equal(make_causal_mask(3, 3)[0, 0], np.tril(np.ones((3, 3), bool)))
    offset = make_causal_mask(2, 5, q_offset=jnp.int32(2))
    assert offset.shape == (1, 1, 2, 5)
    np.testing.assert_array_equal(offset[0, 0], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    pad = make_padding_mask(jnp.array([2, 0, 4]), 4)
    assert pad.shape == (3, 1, 1, 4) and pad.dtype == jnp.bool_
    np.testing.assert_array_equal(pad[:, 0, 0], [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    ids = padding_mask_from_ids(jnp.array([[0, 7, 7], [7, 7, 0]]), pad_id=0)
    np.testing.assert_array_equal(ids[:, 0, 0], [[0, 1, 1], [1, 1, 0]])


def test_argument_errors():
    q, k, v, _, _ = _inputs(Case("errors", T=4, S=4))
    with pytest.raises(ValueError, match="naive, blockwise, cudnn, pallas"):
        attention(q, k, v, impl="flash")
    with pytest.raises(NotImplementedError, match="alibi"):
        attention(q, k, v, alibi_slopes=jnp.ones(4), impl="cudnn")
    with pytest.raises(ValueError, match="must be bool"):
        attention(q, k, v, mask=jnp.ones((2, 1, 1, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        attention(q, k, v, mask=jnp.ones((2, 1, 1, 3), bool))
    with pytest.raises(ValueError, match="divide"):
        attention(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match="q_offset"):
        attention(q, k, v, causal=True, q_offset=jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="block_q"):
        attention(q, k, v, impl="blockwise", block_q=0)
    assert set(IMPLS) == {"auto", "naive", "blockwise", "cudnn", "pallas"}


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the non-GPU error")
def test_cudnn_off_gpu_is_a_clear_value_error():
    q, k, v, _, _ = _inputs(Case("cudnn", T=4, S=4, H=8, dtype="bfloat16"))
    with pytest.raises(ValueError, match="GPU") as info:
        attention(q, k, v, impl="cudnn")
    assert "\n" not in str(info.value)


# cuDNN limits: bf16/fp16, head dim a multiple of 8, even T and S when a mask (bias) meets grad.
GPU_CASES = [
    Case("causal", T=64, S=64, H=64, dtype="bfloat16", causal=True),
    Case("causal_padding", T=64, S=64, H=64, dtype="bfloat16", causal=True, mask="padding"),
    Case("cross_padding", T=32, S=48, H=64, dtype="bfloat16", mask="padding"),
    # is_causal with T != S: ours is top-left aligned (query i sees keys j <= i), check cuDNN's.
    Case("cross_causal", T=32, S=48, H=64, dtype="bfloat16", causal=True),
    Case("gqa", T=64, S=64, N=4, K=2, H=64, dtype="bfloat16", causal=True, mask="padding"),
    Case("mqa", T=64, S=64, N=4, K=1, H=64, dtype="bfloat16", causal=True),
    Case("q_offset_int", T=16, S=48, H=64, dtype="bfloat16", causal=True, q_offset=20),
    Case("q_offset_traced", T=16, S=48, H=64, dtype="bfloat16", causal=True, q_offset=20,
         traced_offset=True),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.name)
def test_cudnn_matches_naive_bf16(case):
    q, k, v, w, mask = _inputs(case)
    expected = _out_and_grads(case, "naive", q, k, v, w, mask)
    actual = _out_and_grads(case, "cudnn", q, k, v, w, mask)
    _assert_all_close(actual, expected, BF16_TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [*GPU_CASES,
                                  Case("pallas_bf16_long", T=256, S=256, H=64, dtype="bfloat16", causal=True),
                                  Case("pallas_bf16_gqa_odd", T=100, S=100, N=4, K=2, H=64, dtype="bfloat16",
                                       mask="heads")],
                         ids=lambda c: c.name)
def test_pallas_gpu_kernel_matches_naive_bf16(case):
    q, k, v, w, mask = _inputs(case)
    expected = _out_and_grads(case, "naive", q, k, v, w, mask)
    actual = _out_and_grads(case, "pallas", q, k, v, w, mask)
    _assert_all_close(actual, expected, BF16_TOL)


@pytest.mark.gpu
def test_cudnn_fully_masked_rows_are_zero():
    case = Case("masked", T=32, S=32, H=64, dtype="bfloat16", causal=True)
    q, k, v, w, _ = _inputs(case)
    ids = np.ones((2, 32), np.int32)
    ids[0, :20] = 0
    ids[1, :] = 0
    mask = padding_mask_from_ids(jnp.asarray(ids), pad_id=0)
    out, dq, dk, dv = _out_and_grads(case, "cudnn", q, k, v, w, mask)
    assert (out[0, :20] == 0).all() and (out[1] == 0).all()
    assert all(np.isfinite(g).all() for g in (dq, dk, dv))


def _alibi_reference(q, k, v, slopes, q_offset, causal):
    """float64 numpy: softmax(q k^T / sqrt(H) - slope |i - j|) v, per head, kv heads repeated."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    out = np.zeros_like(q)
    for b in range(B):
        for n in range(N):
            kh = n // (N // K)
            for i in range(T):
                pos = q_offset + i
                scores = np.array([q[b, i, n] @ k[b, j, kh] / np.sqrt(H) - slopes[n] * abs(pos - j) for j in range(S)])
                if causal:
                    scores[np.arange(S) > pos] = -np.inf
                p = np.exp(scores - scores.max())
                out[b, i, n] = (p / p.sum()) @ v[b, :, kh]
    return out


@pytest.mark.parametrize("causal, q_offset", [(True, 0), (False, 0), (True, 3)])
@pytest.mark.parametrize("impl", ["naive", "blockwise", "pallas"])
def test_alibi_matches_numpy_reference(impl, causal, q_offset):
    from lmlab.nn.positions import alibi_slopes

    ks = jax.random.split(jax.random.key(11), 3)
    q = jax.random.normal(ks[0], (2, 9, 4, 8))
    k = jax.random.normal(ks[1], (2, 12, 2, 8))
    v = jax.random.normal(ks[2], (2, 12, 2, 8))
    slopes = alibi_slopes(4)
    out = _jit(lambda q, k, v: attention(q, k, v, causal=causal, q_offset=q_offset, impl=impl, alibi_slopes=slopes,
                                         block_q=4, block_k=5))(q, k, v)
    np.testing.assert_allclose(out, _alibi_reference(q, k, v, slopes, q_offset, causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["blockwise", "pallas"])
def test_alibi_tiled_gradients_match_naive(impl):
    from lmlab.nn.positions import alibi_slopes

    ks = jax.random.split(jax.random.key(12), 4)
    q = jax.random.normal(ks[0], (1, 37, 4, 8))
    k = jax.random.normal(ks[1], (1, 37, 2, 8))
    v = jax.random.normal(ks[2], (1, 37, 2, 8))
    w = jax.random.normal(ks[3], (1, 37, 4, 8))
    slopes = alibi_slopes(4)

    def loss(impl):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(w * attention(
            q, k, v, causal=True, impl=impl, alibi_slopes=slopes, block_q=16, block_k=16)), argnums=(0, 1, 2)))

    for got, want in zip(loss(impl)(q, k, v), loss("naive")(q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_alibi_is_refused_by_kernels_without_it():
    q = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="alibi_slopes"):
        attention(q, q, q, alibi_slopes=jnp.ones(3))
    assert select_impl(backend="gpu", T=4096, S=4096, H=64, dtype=jnp.bfloat16, alibi=True) == "blockwise"


# ---------------------------------------------------------------------------------------------
# Segment ids (packed documents): query i may attend key j only within its own segment.


def _segments(lengths, total):
    """Ids 1, 2, ... for consecutive runs of the given lengths, then 0 (padding) up to `total`."""
    ids = np.concatenate([np.full(n, s, np.int32) for s, n in enumerate(lengths, 1)])
    return np.concatenate([ids, np.zeros(total - len(ids), np.int32)])


SEGMENT_CASES = [
    # Three documents and a padded tail; boundaries fall inside and across 16-row tiles.
    (Case("segments_causal_gqa", T=37, S=37, N=4, K=2, causal=True), [[9, 20, 5], [37]]),
    (Case("segments_bidirectional", T=37, S=37, mask="padding"), [[16, 16], [3, 3, 3, 20]]),
]


@pytest.mark.parametrize("case, lengths", SEGMENT_CASES, ids=lambda c: getattr(c, "name", ""))
@pytest.mark.parametrize("impl", ["naive", "blockwise", "pallas"])
def test_segment_ids_match_numpy_reference_and_mask(impl, case, lengths):
    q, k, v, w, mask = _inputs(case)
    ids_BT = jnp.asarray(np.stack([_segments(lens, case.T) for lens in lengths]))
    allowed = np.asarray(ids_BT)[:, None, :, None] == np.asarray(ids_BT)[:, None, None, :]
    if mask is not None:
        allowed = allowed & np.asarray(mask)
    if case.causal:
        allowed = allowed & np.tril(np.ones((case.T, case.S), bool))

    @_jit
    def out_and_grads(q, k, v, w):
        out, vjp = jax.vjp(lambda q, k, v: attention(
            q, k, v, mask=mask, causal=case.causal, impl=impl, block_q=16, block_k=16,
            q_segment_ids=ids_BT, kv_segment_ids=ids_BT), q, k, v)
        return out, vjp(w)

    out, grads = out_and_grads(q, k, v, w)
    expected = _numpy_attention(q, k, v, allowed, scale=1 / np.sqrt(case.H))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # Gradients equal those of the same attention under the equivalent dense boolean mask.
    _, vjp_dense = jax.vjp(lambda q, k, v: attention(q, k, v, mask=jnp.asarray(allowed), impl="naive"), q, k, v)
    for name, g, e in zip(("dq", "dk", "dv"), grads, vjp_dense(w)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), err_msg=name, **FP32_TOL)


@pytest.mark.parametrize("impl", ["naive", "blockwise", "pallas"])
def test_segment_ids_in_a_decode_step_hide_padding_slots(impl):
    """T=1 queries at a traced cache index; left-padded slots carry segment 0 and are not seen."""
    case = Case("decode_segments", T=1, S=40, N=4, K=2, causal=True)
    q, k, v, _, _ = _inputs(case)
    pads = np.array([0, 7])
    kv_ids = (np.arange(case.S)[None, :] >= pads[:, None]).astype(np.int32)

    @_jit
    def step(index):
        return attention(q, k, v, causal=True, q_offset=index, impl=impl, block_q=16, block_k=16,
                         q_segment_ids=jnp.ones((2, 1), jnp.int32), kv_segment_ids=jnp.asarray(kv_ids))

    for index in (7, 20, 39):
        allowed = (kv_ids.astype(bool) & (np.arange(case.S) <= index))[:, None, None, :]
        expected = _numpy_attention(q, k, v, allowed, scale=1 / np.sqrt(case.H))
        np.testing.assert_allclose(np.asarray(step(jnp.int32(index))), expected, rtol=1e-5, atol=1e-5)


def test_pallas_segment_ids_lower_to_triton(monkeypatch):
    """As test_pallas_kernels_lower_to_triton: the segment id rows and a mask together, GQA."""
    import lmlab.ops.attention_pallas as attention_pallas

    monkeypatch.setattr(attention_pallas.jax, "default_backend", lambda: "gpu")
    case = Case("lower_segments", T=37, S=37, N=4, K=2, H=32, causal=True, mask="padding", dtype="bfloat16")
    q, k, v, _, mask = _inputs(case)
    ids = jnp.asarray(np.stack([_segments([9, 20, 5], 37), _segments([37], 37)]))

    def out_and_grads(q, k, v):
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, mask=mask, causal=True, impl="pallas",
                                                     q_segment_ids=ids, kv_segment_ids=ids), q, k, v)
        return out, vjp(out)

    hlo = jax.jit(out_and_grads).trace(q, k, v).lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 3


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cudnn", "pallas"])
def test_segment_ids_on_gpu_match_naive_bf16(impl):
    case = Case("gpu_segments", T=64, S=64, N=4, K=2, H=64, dtype="bfloat16", causal=True)
    q, k, v, w, _ = _inputs(case)
    ids = jnp.asarray(np.stack([_segments([20, 30, 13], 64), _segments([64], 64)]))

    def out_and_grads(impl):
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, causal=True, impl=impl, q_segment_ids=ids,
                                                     kv_segment_ids=ids), q, k, v)
        return [np.asarray(x.astype(jnp.float32)) for x in (out, *vjp(w.astype(out.dtype)))]

    _assert_all_close(out_and_grads(impl), out_and_grads("naive"), BF16_TOL)


def test_segment_mask_helper_and_errors():
    same = make_segment_mask(jnp.array([[1, 1, 2, 0]]), jnp.array([[1, 1, 2, 0]]))
    assert same.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(same[0, 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    q, k, v, _, _ = _inputs(Case("errors", T=4, S=4))
    ids = jnp.ones((2, 4), jnp.int32)
    with pytest.raises(ValueError, match="both"):
        attention(q, k, v, q_segment_ids=ids)
    with pytest.raises(ValueError, match=r"\[B,S\]"):
        attention(q, k, v, q_segment_ids=ids, kv_segment_ids=ids[:, :3])
    with pytest.raises(ValueError, match="integers"):
        attention(q, k, v, q_segment_ids=ids, kv_segment_ids=ids.astype(jnp.float32))
