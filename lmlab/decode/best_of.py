"""Best-of-N sampling: draw N continuations, keep the one a reward model scores highest.

The reward model (task reward, lmlab.tasks.reward) scores prompt + completion, the completion
ending with its stop token as in training (lmlab.data.preferences), at the last real token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmlab.decode.sampling import generate


def best_of_n(policy, reward_model, prompt_ids: list[int], *, n: int, max_new_tokens: int, key: jax.Array,
              stop_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[tuple[float, list[int]]]:
    """[(score, completion ids without the stop token)] of n samples, best first."""
    if n < 1:
        raise ValueError(f"best-of-N needs N >= 1, got {n}")
    out = np.asarray(generate(policy, [prompt_ids] * n, max_new_tokens=max_new_tokens, key=key,
                              temperature=temperature, top_k=top_k, top_p=top_p, eos_id=stop_id))
    completions = []
    for row in out[:, len(prompt_ids):].tolist():
        completions.append(row[:row.index(stop_id) + 1] if stop_id in row else row)
    width = len(prompt_ids) + max_new_tokens
    tokens = np.zeros((n, width), np.int32)
    for i, completion in enumerate(completions):
        tokens[i, :len(prompt_ids) + len(completion)] = prompt_ids + completion
    lengths = np.asarray([len(prompt_ids) + len(c) for c in completions])
    scores = np.asarray(reward_model.reward(jnp.asarray(tokens), jnp.asarray(lengths - 1)))
    ranked = sorted(range(n), key=lambda i: -scores[i])
    return [(float(scores[i]), [t for t in completions[i] if t != stop_id]) for i in ranked]
