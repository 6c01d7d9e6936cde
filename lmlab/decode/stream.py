"""Token-by-token decoding for interactive use: each token is returned as soon as it exists.

`generate` (lmlab.decode.sampling) runs the whole continuation in one compiled loop, which is
fastest but shows nothing until the end. Here a jitted prefill fills the KV cache with the prompt
and a jitted one-token step extends it; the Python loop between steps hands each token out, so a
chat prints the reply while it is being written. Tokens equal `generate`'s for the same key.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from lmlab.decode.sampling import next_token


SAMPLING = ("temperature", "top_k", "top_p")


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", *SAMPLING))
def _prefill(graphdef, params, prompt_1T, key, *, cache_len, **sampling):
    model = nnx.merge(graphdef, nnx.State(params))
    cache = model.init_cache(1, cache_len)
    logits_1TV, cache = model(prompt_1T, cache=cache, cache_index=0)
    return next_token(logits_1TV[:, -1], jax.random.fold_in(key, 0), **sampling), cache


@functools.partial(jax.jit, static_argnames=("graphdef", *SAMPLING), donate_argnames=("cache",))
def _step(graphdef, params, token_1, cache, index, key, **sampling):
    model = nnx.merge(graphdef, nnx.State(params))
    logits_11V, cache = model(token_1[:, None], cache=cache, cache_index=index)
    return next_token(logits_11V[:, 0], key, **sampling), cache


def stream(model: nnx.Module, prompt_ids, *, max_new_tokens: int, key: jax.Array, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, stop_ids=()) -> Iterator[int]:
    """Yields up to `max_new_tokens` ids continuing `prompt_ids`; stops after yielding a stop id."""
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError("the prompt needs at least one token")
    config = model.config
    total = len(prompt_ids) + max_new_tokens
    if config.positions in ("learned", "sinusoidal") and total > config.max_len:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"model.max_len = {config.max_len}")
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    sampling = dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
    token_1, cache = _prefill(graphdef, params, jnp.asarray([prompt_ids], jnp.int32), key, cache_len=total,
                              **sampling)
    stops = set(stop_ids)
    for i in range(max_new_tokens):
        token = int(token_1[0])
        yield token
        if token in stops or i + 1 == max_new_tokens:
            return
        token_1, cache = _step(graphdef, params, token_1, cache, jnp.asarray(len(prompt_ids) + i, jnp.int32),
                               jax.random.fold_in(key, i + 1), **sampling)
