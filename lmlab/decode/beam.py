"""Beam search over the same cached step as sampling: beam size K, GNMT length penalty, batch of prompts.

Hypotheses are ranked by their summed token log-probability while searching; a beam that emits
`eos_id` is finished and from then on only extends with `pad_id` at no cost, so it keeps its score.
The search stops when every beam of every prompt has finished or after `max_new_tokens`. Final
ranking divides by the GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016), with the
length counted up to and including the end token.

Encoder-decoder models: pass `source=` [B, S]; the cache `model.init_cache(B, L, source=source)`
holds the encoder keys/values and source mask with the batch first, so repeating it K times and
reordering its rows per parent beam (as for the self-attention cache) keeps every beam on its own
source sentence.

Prompts of different lengths: left-padded, with `prompt_lengths_B`, exactly as in
`lmlab.decode.sampling.generate` (the pads' segment id 0 travels with each beam's cache rows).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab import sharding
from lmlab.decode.sampling import check_prompt_lengths, left_padding_segments

NEG_INF = -1e30


class BeamResult(NamedTuple):
    sequences: jax.Array   # [B, K, T + max_new_tokens]: prompt, continuation, then pad_id
    log_probs: jax.Array   # [B, K]: summed log-probability of each continuation (through eos)
    lengths: jax.Array     # [B, K]: continuation length, eos included
    scores: jax.Array      # [B, K]: log_probs / length penalty, sorted best first


def length_penalty(lengths, alpha: float):
    return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "max_new_tokens", "eos_id", "pad_id", "alpha"))
def _beam_search(graphdef, params, prompt_BT, source, lengths_B, *, beam_size, max_new_tokens, eos_id, pad_id,
                 alpha):
    model = nnx.merge(graphdef, nnx.State(params))
    B, T = prompt_BT.shape
    K, L = beam_size, T + max_new_tokens
    cache = model.init_cache(B, L) if source is None else model.init_cache(B, L, source=source)
    segments = {} if lengths_B is None else {"segment_ids_BT": left_padding_segments(lengths_B, T, T)}
    logits_BTV, cache = model(prompt_BT, cache=cache, cache_index=0, **segments)
    if K >= logits_BTV.shape[-1]:  # fewer real continuations than beams: some would be junk
        raise ValueError(f"beam size {K} must be smaller than the vocabulary ({logits_BTV.shape[-1]} tokens)")
    # Every beam starts from the same prefilled cache; only beam 0 is alive at first so the K
    # initial candidates are K different tokens, not K copies of one.
    cache = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), cache)
    last_logits = jnp.repeat(logits_BTV[:, -1], K, axis=0)  # [B*K, V]
    log_probs_BK = jnp.tile(jnp.array([0.0] + [NEG_INF] * (K - 1)), (B, 1))
    sequences = jnp.full((B, K, L), pad_id, jnp.int32).at[:, :, :T].set(prompt_BT[:, None, :])
    finished_BK = jnp.zeros((B, K), bool)
    lengths_BK = jnp.zeros((B, K), jnp.int32)

    def cond(state):
        i, _, _, _, finished_BK, _, _ = state
        return (i < max_new_tokens) & ~jnp.all(finished_BK)

    def body(state):
        i, sequences, log_probs_BK, lengths_BK, finished_BK, last_logits, cache = state
        V = last_logits.shape[-1]
        token_lp_BKV = jax.nn.log_softmax(last_logits.astype(jnp.float32), axis=-1).reshape(B, K, V)
        # A finished beam may only continue with pad, at no cost. A live beam may pick any token,
        # pad included, exactly as greedy decoding does (a trained model never predicts pad).
        pad_only_V = jnp.full((V,), NEG_INF).at[pad_id].set(0.0)
        token_lp_BKV = jnp.where(finished_BK[..., None], pad_only_V, token_lp_BKV)
        candidates_BKV = log_probs_BK[..., None] + token_lp_BKV
        top_lp_BK, flat_idx_BK = jax.lax.top_k(candidates_BKV.reshape(B, K * V), K)
        parent_BK, token_BK = flat_idx_BK // V, (flat_idx_BK % V).astype(jnp.int32)

        def pick(x_BK):  # gather per-beam state from the chosen parents
            return jnp.take_along_axis(x_BK, parent_BK, axis=1)

        was_finished_BK = pick(finished_BK)
        sequences = jnp.take_along_axis(sequences, parent_BK[..., None], axis=1)
        sequences = jax.lax.dynamic_update_slice(sequences, token_BK[..., None], (0, 0, T + i))
        lengths_BK = pick(lengths_BK) + (~was_finished_BK).astype(jnp.int32)
        finished_BK = was_finished_BK | (token_BK == eos_id)
        rows = (jnp.arange(B)[:, None] * K + parent_BK).reshape(-1)
        cache = jax.tree.map(lambda x: x[rows], cache)
        logits, cache = model(token_BK.reshape(B * K, 1), cache=cache, cache_index=T + i)
        return i + 1, sequences, top_lp_BK, lengths_BK, finished_BK, logits[:, 0], cache

    state = (0, sequences, log_probs_BK, lengths_BK, finished_BK, last_logits, cache)
    _, sequences, log_probs_BK, lengths_BK, _, _, _ = jax.lax.while_loop(cond, body, state)
    scores_BK = log_probs_BK / length_penalty(lengths_BK, alpha)
    order_BK = jnp.argsort(-scores_BK, axis=1)
    return BeamResult(jnp.take_along_axis(sequences, order_BK[..., None], axis=1),
                      jnp.take_along_axis(log_probs_BK, order_BK, axis=1),
                      jnp.take_along_axis(lengths_BK, order_BK, axis=1),
                      jnp.take_along_axis(scores_BK, order_BK, axis=1))


def beam_search(model: nnx.Module, prompt_BT, *, beam_size: int, max_new_tokens: int, eos_id: int,
                pad_id: int, length_penalty_alpha: float = 0.0, source=None, prompt_lengths_B=None) -> BeamResult:
    """Beam search for a batch of prompts; results sorted best first per prompt.

    `source`: [B, S] source ids for an encoder-decoder model (None for a decoder-only one).
    `prompt_lengths_B`: [B] lengths of left-padded prompts (see `generate`); None: all are T long.
    """
    prompt_BT = jnp.asarray(prompt_BT, jnp.int32)
    if prompt_BT.ndim != 2 or prompt_BT.shape[1] < 1:
        raise ValueError("prompt must be a [batch, length>=1] array of token ids")
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError("beam_size and max_new_tokens must be >= 1")
    config = getattr(model, "config", None)  # the same rule as sampling: refuse, never truncate
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
    # Onto the params' mesh, if any.
    prompt_BT, source, prompt_lengths_B = sharding.replicate_like((prompt_BT, source, prompt_lengths_B), params)
    return _beam_search(graphdef, params, prompt_BT, source, prompt_lengths_B, beam_size=int(beam_size),
                        max_new_tokens=int(max_new_tokens), eos_id=int(eos_id), pad_id=int(pad_id),
                        alpha=float(length_penalty_alpha))
