"""Best-of-N sampling: draw N continuations, keep the one a reward model scores highest.

The reward model (task reward, lmlab.tasks.reward) scores prompt + completion, the completion
ending with its stop token as in training (lmlab.data.preferences), at the last real token.
Several prompts decode together: each is repeated N times and left-padded (lmlab.decode.sampling);
each candidate is then scored right-padded, so the reward model never sees a pad before its text.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmlab.decode.sampling import generate, left_pad


def best_of_n_batch(policy, reward_model, prompts: list[list[int]], *, n: int, max_new_tokens: int, key: jax.Array,
                    stop_id: int, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0) -> list[list[tuple[float, list[int]]]]:
    """For each prompt, [(score, completion ids without the stop token)] of its n samples, best first."""
    if n < 1:
        raise ValueError(f"best-of-N needs N >= 1, got {n}")
    rows = [p for p in prompts for _ in range(n)]
    padded_BT, lengths = left_pad(rows)
    T = padded_BT.shape[1]
    out = np.asarray(generate(policy, padded_BT, max_new_tokens=max_new_tokens, key=key, temperature=temperature,
                              top_k=top_k, top_p=top_p, eos_id=stop_id, prompt_lengths_B=lengths))
    completions = []
    for row in out[:, T:].tolist():
        completions.append(row[:row.index(stop_id) + 1] if stop_id in row else row)
    tokens_BS = np.zeros((len(rows), T + max_new_tokens), np.int32)
    for i, (prompt, completion) in enumerate(zip(rows, completions)):
        tokens_BS[i, :len(prompt) + len(completion)] = prompt + completion
    last_B = np.asarray([len(p) + len(c) - 1 for p, c in zip(rows, completions)])
    scores = np.asarray(reward_model.reward(jnp.asarray(tokens_BS), jnp.asarray(last_B)))
    ranked = []
    for start in range(0, len(rows), n):
        order = sorted(range(start, start + n), key=lambda i: -scores[i])
        ranked.append([(float(scores[i]), [t for t in completions[i] if t != stop_id]) for i in order])
    return ranked


def best_of_n(policy, reward_model, prompt_ids: list[int], *, n: int, max_new_tokens: int, key: jax.Array,
              stop_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[tuple[float, list[int]]]:
    """[(score, completion ids without the stop token)] of n samples of one prompt, best first."""
    return best_of_n_batch(policy, reward_model, [prompt_ids], n=n, max_new_tokens=max_new_tokens, key=key,
                           stop_id=stop_id, temperature=temperature, top_k=top_k, top_p=top_p)[0]
