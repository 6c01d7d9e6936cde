"""Flash attention as Pallas kernels: lmlab's own forward, dQ and dK/dV kernels.

- GPU: the kernels lower through Triton (tiles of >= 16 rows, power-of-two head dims).
- CPU: the same kernel programs run in Pallas *interpret* mode: slow, but it is the same
  program, so the kernel maths is tested on a laptop and in CI.
- TPU: jax's `pallas.ops.tpu.flash_attention` for self-attention without masks or offsets (our
  kernels are written for Triton's memory model; Mosaic wants different tiles).

What the kernels take, so every case of `lmlab.ops.attention.attention` runs on them:
- GQA/MQA: a query head's program reads kv head n // G through its BlockSpec (no copies); the
  dK/dV kernel writes each query head's share, and the G shares of a kv head are summed in XLA.
- Causality with an offset: queries carry absolute positions (q_offset + i), keys are 0..S-1; key
  tiles entirely in a query tile's future are skipped.
- Boolean masks, as int8, either one row per sequence and head ([.., 1, S]: key padding) or a
  full [.., T, S] matrix; lengths are padded to the tile and padded keys are never attended.
- Segment ids (packed documents): [B, T] and [B, S] int32 rows, compared per tile, so a packed
  batch costs O(T + S) extra memory, not a [T, S] mask.
- ALiBi: -slope * |i - j| added to each score tile from the same positions.
- A query row with no allowed key returns zeros, and its gradients are zeros (never NaN).
- On a device mesh the kernels run per device on its sequences and heads (`sharding.map_shards`):
  XLA cannot partition a custom call and would otherwise gather whole arrays on every device.

Shape letters: B batch, T/S query/key length (padded: Tp/Sp), N query heads, K kv heads,
G = N // K, H head dim (padded to Hp, a power of two), Q/C a query/key tile.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lmlab import sharding
from lmlab.ops.attention_cudnn import is_static_zero

MIN_TILE = 16  # Triton's tl.dot needs every operand dim >= 16
# The backward kernels hold more live tiles (p, dp, ds, two fp32 accumulators) than the forward:
# smaller tiles keep them in registers (jax's own Triton kernel uses 32 there too). Unmeasured
# on a GPU yet: a starting point for tuning.
BACKWARD_TILE = 32


class _Kernel(NamedTuple):
    """Static settings of one call (hashable: a non-differentiable custom_vjp argument)."""

    scale: float
    causal: bool
    block_q: int  # tile sizes of the kernel at hand (the backward runs with smaller ones)
    block_k: int
    kv_len: int  # keys at positions >= kv_len are padding
    kv_padded: int  # Sp
    mask_rows: int  # 0: no mask; 1: one mask row per (batch, head); else Tp rows
    mask_heads: bool  # mask differs per query head
    mask_batch: bool  # mask differs per sequence
    segments: bool  # q/kv segment id rows come before the mask
    alibi: bool
    head_dim: int  # padded
    interpret: bool


def pallas_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: jax.Array | None = None,
    *,
    causal: bool = False,
    q_offset: int | jax.Array = 0,
    scale: float,
    block_q: int = 128,
    block_k: int = 128,
    alibi_slopes: jax.Array | None = None,
    segment_ids: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Arguments as in `lmlab.ops.attention.attention` (already validated; mask is 4D or None;
    segment_ids is (q_segment_ids_BT, kv_segment_ids_BS) or None)."""
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    backend = jax.default_backend()
    if backend == "tpu":
        if (mask is not None or segment_ids is not None or T != S or not is_static_zero(q_offset)
                or alibi_slopes is not None):
            raise NotImplementedError(
                "impl='pallas' on TPU runs jax's flash kernel: self-attention without masks, "
                "segment ids, offsets or ALiBi; use 'blockwise'"
            )
        rows = ("batch", None, "heads", None)
        return sharding.map_shards(functools.partial(_tpu_flash, causal=causal, scale=scale),
                                   q_BTNH, k_BSKH, v_BSKH, names=[rows] * 3, out_names=rows)

    bq = _tile(block_q, T)
    bk = _tile(block_k, S)
    Tp, Sp, Hp = _round_up(T, bq), _round_up(S, bk), max(MIN_TILE, pl.next_power_of_2(H))
    q = _pad(q_BTNH, {1: Tp, 3: Hp})
    k = _pad(k_BSKH, {1: Sp, 3: Hp})
    v = _pad(v_BSKH, {1: Sp, 3: Hp})
    # Absolute query positions: causality compares them with key positions, ALiBi takes distances.
    q_pos_Tp = jnp.asarray(q_offset, jnp.int32) + jnp.arange(Tp, dtype=jnp.int32)

    mask_rows, mask_i8 = 0, None
    if mask is not None:
        Bm, Nm, Tm, Sm = mask.shape
        mask = jnp.broadcast_to(mask, (Bm, Nm, Tm, S))  # a key-broadcast mask is rare: expand it
        mask_i8 = _pad(mask.astype(jnp.int8), {2: Tp if Tm > 1 else 1, 3: Sp})
        mask_rows = Tp if Tm > 1 else 1
    slopes_N = (jnp.zeros((N,), jnp.float32) if alibi_slopes is None
                else jnp.asarray(alibi_slopes, jnp.float32))

    cfg = _Kernel(
        scale=float(scale), causal=bool(causal), block_q=bq, block_k=bk, kv_len=S, kv_padded=Sp,
        mask_rows=mask_rows, mask_heads=mask is not None and mask.shape[1] > 1,
        mask_batch=mask is not None and mask.shape[0] > 1, segments=segment_ids is not None,
        alibi=alibi_slopes is not None,
        head_dim=Hp, interpret=backend != "gpu",
    )
    # XLA cannot partition a Pallas kernel: on a mesh, each device runs it on its own sequences
    # and, under tensor parallelism, its own heads (query and kv heads split together).
    rows = ("batch", None, "heads", None)
    args, names = [q, k, v, q_pos_Tp, slopes_N], [rows, rows, rows, (None,), ("heads",)]
    extras = []  # the optional inputs, in kernel order: segment id rows, then the mask
    if segment_ids is not None:  # padded queries are dropped and padded keys never attended
        extras += [_pad(segment_ids[0], {1: Tp}), _pad(segment_ids[1], {1: Sp})]
        names += [("batch", None)] * 2
    if mask_i8 is not None:
        extras.append(mask_i8)
        names.append(("batch", "heads", None, None))

    def run(q, k, v, q_pos_Tp, slopes_N, *extras):
        mask_i8 = extras[-1] if cfg.mask_rows else None
        local = cfg._replace(mask_batch=mask_i8 is not None and mask_i8.shape[0] > 1,
                             mask_heads=mask_i8 is not None and mask_i8.shape[1] > 1)
        return _flash(q, k, v, tuple(extras), q_pos_Tp, slopes_N, local)

    out = sharding.map_shards(run, *args, *extras, names=names, out_names=rows)
    return out[:, :T, :, :H]


def _tile(block: int, length: int) -> int:
    """A power-of-two tile >= MIN_TILE, no longer than the (rounded-up) sequence needs."""
    return max(MIN_TILE, min(pl.next_power_of_2(block), pl.next_power_of_2(length)))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad(x: jax.Array, sizes: dict[int, int]) -> jax.Array:
    widths = [(0, sizes.get(axis, n) - n) for axis, n in enumerate(x.shape)]
    return jnp.pad(x, widths) if any(w for _, w in widths) else x


# ---------------------------------------------------------------------------------------------
# What every kernel shares: one tile of scores, masked. Positions are absolute.


def _score_tile(q_QH, k_CH, q_pos_Q, k_start, mask_QC, slope, cfg: _Kernel):
    """[Q, C] fp32 scores of one tile; disallowed pairs are -inf (mask_QC: bool [Q|1, C] or None)."""
    s_QC = plgpu.dot(q_QH, k_CH, trans_b=True) * cfg.scale
    k_pos_C = k_start + jnp.arange(cfg.block_k, dtype=jnp.int32)
    if cfg.alibi:
        s_QC -= slope * jnp.abs(q_pos_Q[:, None] - k_pos_C[None, :]).astype(jnp.float32)
    allowed_QC = jnp.broadcast_to(k_pos_C[None, :] < cfg.kv_len, s_QC.shape)
    if cfg.causal:
        allowed_QC &= k_pos_C[None, :] <= q_pos_Q[:, None]
    if mask_QC is not None:
        allowed_QC &= mask_QC
    return jnp.where(allowed_QC, s_QC, -jnp.inf)


def _mask_tile(seg_refs, mask_ref, q_start, k_start, cfg: _Kernel):
    """The bool [Q|1, C] tile that segment ids ([Tp] and [Sp] refs) and the mask ([rows, Sp] ref)
    allow; None without either."""
    allowed = None
    if seg_refs is not None:
        q_seg_Q = seg_refs[0][pl.ds(q_start, cfg.block_q)]
        kv_seg_C = seg_refs[1][pl.ds(k_start, cfg.block_k)]
        allowed = q_seg_Q[:, None] == kv_seg_C[None, :]
    if mask_ref is not None:
        rows = pl.ds(q_start, cfg.block_q) if cfg.mask_rows > 1 else pl.ds(0, 1)
        mask = mask_ref[rows, pl.ds(k_start, cfg.block_k)] != 0
        allowed = mask if allowed is None else allowed & mask
    return allowed


def _extra_specs(cfg: _Kernel, Tp: int) -> list[pl.BlockSpec]:
    """BlockSpecs of the optional inputs (segment id rows, then the mask) for a grid
    (tile, b, query head); whole rows: the kernels slice their own tiles."""
    specs = []
    if cfg.segments:
        specs += [pl.BlockSpec((None, Tp), lambda i, b, h: (b, 0)),
                  pl.BlockSpec((None, cfg.kv_padded), lambda i, b, h: (b, 0))]
    if cfg.mask_rows:
        specs.append(_mask_spec(cfg))
    return specs


def _mask_spec(cfg: _Kernel) -> pl.BlockSpec:
    """BlockSpec of the int8 mask [B|1, N|1, rows, Sp] for a grid (tile, b, query head).

    Rows and columns are whole: the kernels slice their own tiles.
    """
    b_of = (lambda b: b) if cfg.mask_batch else (lambda b: 0)
    h_of = (lambda h: h) if cfg.mask_heads else (lambda h: 0)
    return pl.BlockSpec((None, None, cfg.mask_rows, cfg.kv_padded), lambda i, b, h: (b_of(b), h_of(h), 0, 0))


def _key_tiles_to_visit(q_pos_Q, num_k_tiles: int, cfg: _Kernel):
    """Causal: key tiles after the query tile's last position are fully masked, so stop there."""
    if not cfg.causal:
        return num_k_tiles
    return jnp.minimum(lax.div(jnp.max(q_pos_Q), cfg.block_k) + 1, num_k_tiles)


def _first_query_tile(q_pos_ref, k_start, cfg: _Kernel):
    """Causal: query tiles that end before this key tile cannot see it, so start after them."""
    if not cfg.causal:
        return 0
    q_offset = jnp.min(q_pos_ref[pl.ds(0, cfg.block_q)])
    return lax.div(jnp.maximum(k_start - q_offset, 0), cfg.block_q)


def _split_refs(refs, cfg: _Kernel):
    """(segment id refs or None, mask ref or None, output refs): the optional inputs follow the
    fixed ones, segment ids first."""
    seg_refs = None
    if cfg.segments:
        seg_refs, refs = refs[:2], refs[2:]
    if cfg.mask_rows:
        return seg_refs, refs[0], refs[1:]
    return seg_refs, None, refs


# ---------------------------------------------------------------------------------------------
# Forward: grid (B, N, Tp / Q); each program walks the key tiles with an online softmax.


def _forward_kernel(q_ref, k_ref, v_ref, q_pos_ref, slopes_ref, *refs, cfg: _Kernel):
    seg_refs, mask_ref, (o_ref, lse_ref) = _split_refs(refs, cfg)
    q_start = pl.program_id(0) * cfg.block_q
    q_QH = q_ref[...]
    q_pos_Q = q_pos_ref[...]
    slope = slopes_ref[pl.program_id(2)]

    def visit(k_tile, carry):
        max_Q, sum_Q, acc_QH = carry
        k_start = k_tile * cfg.block_k
        k_CH = k_ref[pl.ds(k_start, cfg.block_k), :]
        v_CH = v_ref[pl.ds(k_start, cfg.block_k), :]
        mask_QC = _mask_tile(seg_refs, mask_ref, q_start, k_start, cfg)
        s_QC = _score_tile(q_QH, k_CH, q_pos_Q, k_start, mask_QC, slope, cfg)
        new_max_Q = jnp.maximum(max_Q, jnp.max(s_QC, axis=1))
        # Rows that have seen only masked keys keep max -inf: shift by 0 so exp(-inf) stays 0.
        shift_Q = jnp.where(new_max_Q == -jnp.inf, 0.0, new_max_Q)
        p_QC = jnp.exp(s_QC - shift_Q[:, None])
        rescale_Q = jnp.exp(max_Q - shift_Q)
        sum_Q = rescale_Q * sum_Q + jnp.sum(p_QC, axis=1)
        acc_QH = rescale_Q[:, None] * acc_QH + plgpu.dot(p_QC.astype(v_CH.dtype), v_CH)
        return new_max_Q, sum_Q, acc_QH

    init = (jnp.full((cfg.block_q,), -jnp.inf, jnp.float32), jnp.zeros((cfg.block_q,), jnp.float32),
            jnp.zeros(q_QH.shape, jnp.float32))
    stop = _key_tiles_to_visit(q_pos_Q, k_ref.shape[0] // cfg.block_k, cfg)
    max_Q, sum_Q, acc_QH = lax.fori_loop(0, stop, visit, init)
    empty_Q = sum_Q == 0.0  # no allowed key: acc is 0, so dividing by 1 returns the zeros promised
    safe_sum_Q = jnp.where(empty_Q, 1.0, sum_Q)
    o_ref[...] = (acc_QH / safe_sum_Q[:, None]).astype(o_ref.dtype)
    # Any finite value serves empty rows: the backward's exp(-inf - lse) is 0 whatever lse is.
    lse_ref[...] = jnp.where(empty_Q, 0.0, max_Q + jnp.log(safe_sum_Q))


def _forward(q, k, v, extras, q_pos_Tp, slopes_N, cfg: _Kernel):
    B, Tp, N, Hp = q.shape
    Sp, K = k.shape[1], k.shape[2]
    in_specs = _query_tile_specs(cfg, Tp, Sp, N, Hp, N // K) + _extra_specs(cfg, Tp)
    args = [q, k, v, q_pos_Tp, slopes_N, *extras]
    row_spec = pl.BlockSpec((None, cfg.block_q, None, Hp), lambda i, b, n: (b, i, n, 0))
    return pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg),
        grid=(Tp // cfg.block_q, B, N),
        in_specs=in_specs,
        out_specs=[row_spec, pl.BlockSpec((None, None, cfg.block_q), lambda i, b, n: (b, n, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((B, N, Tp), jnp.float32)],
        compiler_params=_triton_params(cfg),
        interpret=cfg.interpret,
        name="lmlab_flash_forward",
    )(*args)


def _query_tile_specs(cfg: _Kernel, Tp: int, Sp: int, N: int, Hp: int, G: int) -> list[pl.BlockSpec]:
    """q, k, v, query positions and slopes for a grid (query tile i, b, query head n).

    The tile axis comes first, as in jax's kernel: programs launched together are the tiles of
    one (sequence, head), which read the same keys and values.
    """
    return [
        pl.BlockSpec((None, cfg.block_q, None, Hp), lambda i, b, n: (b, i, n, 0)),
        pl.BlockSpec((None, Sp, None, Hp), lambda i, b, n: (b, 0, n // G, 0)),
        pl.BlockSpec((None, Sp, None, Hp), lambda i, b, n: (b, 0, n // G, 0)),
        pl.BlockSpec((cfg.block_q,), lambda i, b, n: (i,)),
        pl.BlockSpec((N,), lambda i, b, n: (0,)),
    ]


# ---------------------------------------------------------------------------------------------
# Backward (FlashAttention-2): P = exp(S - lse) is recomputed per tile; with
# delta = rowsum(dO * O): dV = P^T dO, dS = P * (dO V^T - delta), dK = scale dS^T Q, dQ = scale dS K.


def _dq_kernel(q_ref, k_ref, v_ref, q_pos_ref, slopes_ref, do_ref, lse_ref, delta_ref, *refs,
               cfg: _Kernel):
    seg_refs, mask_ref, (dq_ref,) = _split_refs(refs, cfg)
    q_start = pl.program_id(0) * cfg.block_q
    q_QH, do_QH, q_pos_Q = q_ref[...], do_ref[...], q_pos_ref[...]
    lse_Q, delta_Q = lse_ref[...], delta_ref[...]
    slope = slopes_ref[pl.program_id(2)]

    def visit(k_tile, dq_QH):
        k_start = k_tile * cfg.block_k
        k_CH = k_ref[pl.ds(k_start, cfg.block_k), :]
        v_CH = v_ref[pl.ds(k_start, cfg.block_k), :]
        mask_QC = _mask_tile(seg_refs, mask_ref, q_start, k_start, cfg)
        s_QC = _score_tile(q_QH, k_CH, q_pos_Q, k_start, mask_QC, slope, cfg)
        p_QC = jnp.exp(s_QC - lse_Q[:, None])  # masked: exp(-inf) = 0
        ds_QC = p_QC * (plgpu.dot(do_QH, v_CH, trans_b=True) - delta_Q[:, None]) * cfg.scale
        return dq_QH + plgpu.dot(ds_QC.astype(k_CH.dtype), k_CH)

    stop = _key_tiles_to_visit(q_pos_Q, k_ref.shape[0] // cfg.block_k, cfg)
    dq_QH = lax.fori_loop(0, stop, visit, jnp.zeros(q_QH.shape, jnp.float32))
    dq_ref[...] = dq_QH.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, q_pos_ref, slopes_ref, do_ref, lse_ref, delta_ref, *refs,
                cfg: _Kernel):
    """One key tile against one query head, over all that head's query tiles: the head's share
    of dK/dV (the G shares of a kv head are summed outside, so programs stay independent)."""
    seg_refs, mask_ref, (dk_ref, dv_ref) = _split_refs(refs, cfg)
    k_start = pl.program_id(0) * cfg.block_k
    k_CH, v_CH = k_ref[...], v_ref[...]
    slope = slopes_ref[pl.program_id(2)]

    def visit(q_tile, carry):
        dk_CH, dv_CH = carry
        q_start = q_tile * cfg.block_q
        rows = pl.ds(q_start, cfg.block_q)
        q_QH, do_QH = q_ref[rows, :], do_ref[rows, :]
        lse_Q, delta_Q = lse_ref[rows], delta_ref[rows]
        mask_QC = _mask_tile(seg_refs, mask_ref, q_start, k_start, cfg)
        s_QC = _score_tile(q_QH, k_CH, q_pos_ref[rows], k_start, mask_QC, slope, cfg)
        p_QC = jnp.exp(s_QC - lse_Q[:, None])
        dv_CH += plgpu.dot(p_QC.astype(do_QH.dtype), do_QH, trans_a=True)
        ds_QC = p_QC * (plgpu.dot(do_QH, v_CH, trans_b=True) - delta_Q[:, None]) * cfg.scale
        dk_CH += plgpu.dot(ds_QC.astype(q_QH.dtype), q_QH, trans_a=True)
        return dk_CH, dv_CH

    zeros_CH = jnp.zeros(k_CH.shape, jnp.float32)
    first = _first_query_tile(q_pos_ref, k_start, cfg)
    dk_CH, dv_CH = lax.fori_loop(first, q_ref.shape[0] // cfg.block_q, visit, (zeros_CH, zeros_CH))
    dk_ref[...] = dk_CH.astype(dk_ref.dtype)
    dv_ref[...] = dv_CH.astype(dv_ref.dtype)


def _backward(q, k, v, extras, q_pos_Tp, slopes_N, out, lse_BNT, do, cfg: _Kernel):
    # Powers of two no larger than the forward's tiles, so they divide the padded lengths too.
    cfg = cfg._replace(block_q=min(cfg.block_q, BACKWARD_TILE), block_k=min(cfg.block_k, BACKWARD_TILE))
    B, Tp, N, Hp = q.shape
    Sp, K = k.shape[1], k.shape[2]
    G = N // K
    delta_BNT = jnp.einsum("btnh,btnh->bnt", do.astype(jnp.float32), out.astype(jnp.float32))

    row_spec = pl.BlockSpec((None, cfg.block_q, None, Hp), lambda i, b, n: (b, i, n, 0))
    stat_spec = pl.BlockSpec((None, None, cfg.block_q), lambda i, b, n: (b, n, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg),
        grid=(Tp // cfg.block_q, B, N),
        in_specs=[*_query_tile_specs(cfg, Tp, Sp, N, Hp, G), row_spec, stat_spec, stat_spec,
                  *_extra_specs(cfg, Tp)],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_triton_params(cfg),
        interpret=cfg.interpret,
        name="lmlab_flash_dq",
    )(q, k, v, q_pos_Tp, slopes_N, do, lse_BNT, delta_BNT, *extras)

    # Grid over query heads: with GQA each program writes its head's share in fp32, and the G
    # shares of a kv head are summed here (memory of one fp32 q-sized array, for G x programs).
    whole_rows = pl.BlockSpec((None, Tp, None, Hp), lambda j, b, n: (b, 0, n, 0))
    whole_stats = pl.BlockSpec((None, None, Tp), lambda j, b, n: (b, n, 0))
    key_spec = pl.BlockSpec((None, cfg.block_k, None, Hp), lambda j, b, n: (b, j, n // G, 0))
    share_spec = pl.BlockSpec((None, cfg.block_k, None, Hp), lambda j, b, n: (b, j, n, 0))
    share_dtype = k.dtype if G == 1 else jnp.float32
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg),
        grid=(Sp // cfg.block_k, B, N),
        in_specs=[whole_rows, key_spec, key_spec, pl.BlockSpec((Tp,), lambda j, b, n: (0,)),
                  pl.BlockSpec((N,), lambda j, b, n: (0,)), whole_rows, whole_stats, whole_stats,
                  *_extra_specs(cfg, Tp)],
        out_specs=[share_spec, share_spec],
        out_shape=[jax.ShapeDtypeStruct((B, Sp, N, Hp), share_dtype)] * 2,
        compiler_params=_triton_params(cfg),
        interpret=cfg.interpret,
        name="lmlab_flash_dkv",
    )(q, k, v, q_pos_Tp, slopes_N, do, lse_BNT, delta_BNT, *extras)
    if G > 1:
        dk, dv = (x.reshape(B, Sp, K, G, Hp).sum(axis=3).astype(k.dtype) for x in (dk, dv))
    return dq, dk, dv


def _triton_params(cfg: _Kernel):
    """Triton compiler settings: naming them is also what selects the Triton lowering on GPU (a
    pallas_call without them would go to Mosaic GPU, which these kernels are not written for)."""
    return plgpu.CompilerParams(num_warps=4 if cfg.head_dim <= 64 else 8, num_stages=2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, extras, q_pos_Tp, slopes_N, cfg: _Kernel):
    """`extras`: the optional kernel inputs, a tuple: (q segment ids, kv segment ids)? (mask)?"""
    return _forward(q, k, v, extras, q_pos_Tp, slopes_N, cfg)[0]


def _flash_fwd(q, k, v, extras, q_pos_Tp, slopes_N, cfg: _Kernel):
    out, lse_BNT = _forward(q, k, v, extras, q_pos_Tp, slopes_N, cfg)
    return out, (q, k, v, extras, q_pos_Tp, slopes_N, out, lse_BNT)


def _flash_bwd(cfg: _Kernel, residuals, do):
    dq, dk, dv = _backward(*residuals, do, cfg)
    # Segment ids, mask, positions and ALiBi slopes are not differentiated: None is a zero cotangent.
    return dq, dk, dv, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---------------------------------------------------------------------------------------------
# TPU: jax's flash kernel (it wants [B, N, T, H]).


def _tpu_flash(q_BTNH, k_BSKH, v_BSKH, *, causal: bool, scale: float) -> jax.Array:
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu

    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    if N != K:  # the TPU kernel has no GQA: repeat each kv head for its query heads
        k_BSKH = jnp.repeat(k_BSKH, N // K, axis=2)
        v_BSKH = jnp.repeat(v_BSKH, N // K, axis=2)
    block = min(128, _round_up(T, 16))
    L = _round_up(T, block)
    segments = None
    if L != T:  # pad to the tile; padding keys get segment 0 so real queries never see them
        q_BTNH, k_BSKH, v_BSKH = (_pad(x, {1: L}) for x in (q_BTNH, k_BSKH, v_BSKH))
        segment_BL = jnp.broadcast_to((jnp.arange(L) < T).astype(jnp.int32), (B, L))
        segments = tpu.SegmentIds(q=segment_BL, kv=segment_BL)
    sizes = tpu.BlockSizes(block_q=block, block_k_major=block, block_k=block, block_b=1,
                           block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block,
                           block_q_dkv=block, block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
    out = tpu.flash_attention(*(x.transpose(0, 2, 1, 3) for x in (q_BTNH, k_BSKH, v_BSKH)),
                              segment_ids=segments, causal=causal, sm_scale=scale, block_sizes=sizes)
    return out.transpose(0, 2, 1, 3)[:, :T]
