"""Autoregressive generation: greedy and temperature / top-k / top-p sampling, with or without a KV cache.

Both paths are one jitted program (prefill, then a lax.scan over new tokens) and draw step i's
token with fold_in(key, i), so for the same model and key they produce the same tokens; the cached
path does O(1) work per token, the recompute path re-runs the whole prefix (kept as a reference
and for benchmarks).

An encoder-decoder model decodes through the same step: pass `source=` ([B, S] ids) and the
prompt is the decoder's prefix (e.g. [[bos]] * B); `model.init_cache(B, L, source=source)` runs the
encoder once and the cache carries its keys/values.

Prompts of different lengths share one batch left-padded (as in HF transformers): row b holds its
prompt in the last prompt_lengths_B[b] columns, so every row's continuation starts at column T and
one cache index serves the whole batch. The model gets segment ids (0 on the pads, 1 on the prompt
and continuation): pad keys are never attended and positions start at 0 at each prompt's first
token, so a row decodes exactly as its prompt alone would (decoder-only models with
`segment_ids_BT`, e.g. lmlab's GPT).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab import sharding


def left_pad(prompts: list[list[int]], multiple: int = 32) -> tuple[np.ndarray, list[int]]:
    """Prompts of any lengths as one [B, T] int32 batch, left-padded with 0, and their lengths (for
    `prompt_lengths_B`). T is the longest length rounded up to `multiple`: a few compiled shapes
    instead of one per length; wider padding changes nothing, pads are never attended."""
    if not prompts or min(map(len, prompts)) < 1:
        raise ValueError("left_pad needs at least one prompt and no empty prompt")
    lengths = [len(p) for p in prompts]
    T = -(-max(lengths) // multiple) * multiple
    padded_BT = np.zeros((len(prompts), T), np.int32)
    for i, ids in enumerate(prompts):
        padded_BT[i, T - len(ids):] = ids
    return padded_BT, lengths


def left_padding_segments(prompt_lengths_B: jax.Array, T: int, total: int) -> jax.Array:
    """[B, total] int32 segment ids of left-padded prompts of width T: 0 on the T - length pads of
    each row, 1 from its prompt's first token on (continuation included)."""
    pads_B = T - jnp.asarray(prompt_lengths_B, jnp.int32)
    return (jnp.arange(total, dtype=jnp.int32)[None, :] >= pads_B[:, None]).astype(jnp.int32)


def check_prompt_lengths(prompt_lengths_B, prompt_BT: jax.Array, source) -> jax.Array:
    """Validates the lengths of left-padded prompts: one per row, each 1 .. T; decoder-only."""
    B, T = prompt_BT.shape
    lengths_B = np.asarray(prompt_lengths_B)
    if lengths_B.shape != (B,) or not np.issubdtype(lengths_B.dtype, np.integer):
        raise ValueError(f"prompt_lengths_B must be {B} integers (one per prompt), got {lengths_B!r}")
    if lengths_B.min() < 1 or lengths_B.max() > T:
        raise ValueError(f"prompt lengths must be between 1 and the prompt width {T}, got {lengths_B.tolist()}")
    if source is not None:
        raise ValueError("prompt_lengths_B is for decoder-only models; an encoder-decoder prompt has no padding")
    return jnp.asarray(lengths_B, jnp.int32)


def filter_logits(logits_BV: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets the logits of tokens outside the top-k, then outside the nucleus, to the dtype's minimum.

    Both cuts are by rank, not by value, so ties at the cut (common in bf16) cannot widen them:
    top-k keeps exactly k tokens, and the nucleus is the shortest prefix of the ranking (after the
    top-k cut, renormalized) whose probability reaches top_p. The most likely token always stays,
    whatever top_p is. Equal logits rank by token id. top_k=0 or >= V and top_p=1 switch a cut off.
    """
    V = logits_BV.shape[-1]
    use_k, use_p = 0 < top_k < V, top_p < 1.0
    if not (use_k or use_p):
        return logits_BV
    neg_inf = jnp.finfo(logits_BV.dtype).min
    rows_BV = logits_BV.reshape(-1, V)
    if not use_p:  # top-k alone: lax.top_k's indices, no full sort
        _, index_BK = jax.lax.top_k(rows_BV, top_k)
        keep_BV = jnp.zeros(rows_BV.shape, bool).at[jnp.arange(rows_BV.shape[0])[:, None], index_BK].set(True)
    else:
        order_BV = jnp.argsort(rows_BV, axis=-1, descending=True, stable=True)  # rank -> token
        sorted_BV = jnp.take_along_axis(rows_BV, order_BV, axis=-1)
        rank_V = jnp.arange(V)
        keep_sorted_BV = jnp.broadcast_to(rank_V < (top_k if use_k else V), sorted_BV.shape)
        probs_BV = jax.nn.softmax(jnp.where(keep_sorted_BV, sorted_BV, neg_inf), axis=-1)
        # Keep rank i if the mass of the ranks before it is still short of top_p.
        keep_sorted_BV &= (jnp.cumsum(probs_BV, axis=-1) - probs_BV) < top_p
        keep_sorted_BV |= rank_V == 0
        keep_BV = jnp.take_along_axis(keep_sorted_BV, jnp.argsort(order_BV, axis=-1), axis=-1)
    return jnp.where(keep_BV, rows_BV, neg_inf).reshape(logits_BV.shape)


def next_token(logits_BV: jax.Array, key: jax.Array, *, temperature: float, top_k: int = 0,
               top_p: float = 1.0) -> jax.Array:
    """Temperature 0 is greedy (argmax); otherwise sample from the filtered, tempered distribution.

    The temperature divides the logits first, so the nucleus is the tempered distribution's (as in
    HF transformers).
    """
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = filter_logits(logits_BV.astype(jnp.float32) / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature", "top_k", "top_p", "use_cache",
                                             "eos_id"))
def _generate(graphdef, params, prompt_BT, key, source, lengths_B, *, max_new_tokens, temperature, top_k, top_p,
              use_cache, eos_id):
    model = nnx.merge(graphdef, nnx.State(params))
    with_source = {} if source is None else {"source": source}  # encoder-decoder models only
    B, T = prompt_BT.shape
    total = T + max_new_tokens
    # Left-padded prompts: the prompt's and the whole buffer's segment ids (decoding steps default
    # to segment 1 in the cache, which is what they are).
    segments_BL = None if lengths_B is None else left_padding_segments(lengths_B, T, total)
    prompt_segments = {} if segments_BL is None else {"segment_ids_BT": segments_BL[:, :T]}
    buffer_segments = {} if segments_BL is None else {"segment_ids_BT": segments_BL}
    pick = functools.partial(next_token, temperature=temperature, top_k=top_k, top_p=top_p)
    buffer_BL = jnp.zeros((B, total), jnp.int32).at[:, :T].set(prompt_BT)
    end = -1 if eos_id is None else eos_id  # -1: no token ends a row

    def emit(buffer_BL, done_B, token_B, i):
        """Writes step i's tokens; a row that has ended repeats the end token."""
        token_B = jnp.where(done_B, end, token_B)
        return jax.lax.dynamic_update_slice(buffer_BL, token_B[:, None], (0, T + i)), done_B | (token_B == end), token_B

    def running(state):  # stop after max_new_tokens, or once every row has emitted eos_id
        return (state[0] < max_new_tokens) & ~jnp.all(state[-1])

    done_B = jnp.zeros((B,), bool)
    if use_cache:
        cache = model.init_cache(B, total, **with_source)
        logits_BTV, cache = model(prompt_BT, cache=cache, cache_index=0, **prompt_segments)
        first = pick(logits_BTV[:, -1], jax.random.fold_in(key, 0))

        def step(state):
            i, token_B, cache, buffer_BL, done_B = state
            buffer_BL, done_B, token_B = emit(buffer_BL, done_B, token_B, i)
            logits_B1V, cache = model(token_B[:, None], cache=cache, cache_index=T + i)
            return i + 1, pick(logits_B1V[:, 0], jax.random.fold_in(key, i + 1)), cache, buffer_BL, done_B

        i, _, _, buffer_BL, _ = jax.lax.while_loop(running, step, (0, first, cache, buffer_BL, done_B))
    else:
        def step(state):
            # Recompute everything; positions after T + i hold zeros, which causality keeps invisible.
            i, buffer_BL, done_B = state
            logits_BLV, _ = model(buffer_BL, **with_source, **buffer_segments)
            logits_BV = jax.lax.dynamic_index_in_dim(logits_BLV, T + i - 1, axis=1, keepdims=False)
            buffer_BL, done_B, _ = emit(buffer_BL, done_B, pick(logits_BV, jax.random.fold_in(key, i)), i)
            return i + 1, buffer_BL, done_B

        i, buffer_BL, _ = jax.lax.while_loop(running, step, (0, buffer_BL, done_B))
    # Stopped early: every row has ended, and the steps not taken repeat the end token too.
    return jnp.where(jnp.arange(total) >= T + i, end, buffer_BL)


def generate(model: nnx.Module, prompt_BT, *, max_new_tokens: int, key: jax.Array, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, use_cache: bool = True, source=None,
             eos_id: int | None = None, prompt_lengths_B=None) -> jax.Array:
    """Returns [B, T + max_new_tokens] token ids: the prompt followed by the continuation.

    `source`: [B, S] source ids for an encoder-decoder model (None for a decoder-only one).
    `prompt_lengths_B`: [B] lengths of left-padded prompts (module docstring): row b's prompt is
    prompt_BT[b, T - length:], its pads (any ids) are returned as given. None: all are T long.
    `eos_id`: a row that emits it repeats it from then on, and decoding stops as soon as every
    row has (the tokens before are the same as without it).
    """
    prompt_BT = jnp.asarray(prompt_BT, jnp.int32)
    if prompt_BT.ndim != 2 or prompt_BT.shape[1] < 1:
        raise ValueError("prompt must be a [batch, length>=1] array of token ids")
    config = getattr(model, "config", None)
    total = prompt_BT.shape[1] + max_new_tokens
    if config is not None and config.positions in ("learned", "sinusoidal") and total > config.max_len:
        raise ValueError(f"prompt + max_new_tokens = {total} exceeds model.max_len = {config.max_len}")
    if source is not None:
        source = jnp.asarray(source, jnp.int32)
        if source.ndim != 2 or source.shape[0] != prompt_BT.shape[0]:
            raise ValueError("source must be a [batch, length] array with the prompt's batch size")
    if prompt_lengths_B is not None:
        prompt_lengths_B = check_prompt_lengths(prompt_lengths_B, prompt_BT, source)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    # Parameters sharded over a mesh (lmlab.sharding): the inputs go there too, replicated.
    prompt_BT, key, source, prompt_lengths_B = sharding.replicate_like((prompt_BT, key, source, prompt_lengths_B),
                                                                       params)
    return _generate(graphdef, params, prompt_BT, key, source, prompt_lengths_B, max_new_tokens=max_new_tokens,
                     temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), use_cache=use_cache,
                     eos_id=None if eos_id is None else int(eos_id))
