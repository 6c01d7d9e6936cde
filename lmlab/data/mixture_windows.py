"""Training windows of a mixture, drawn on device like the single-corpus ones (lmlab.tasks.lm)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mixture_train_arrays(train_tokens: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sources' training tokens end to end, and where each starts and how long it is."""
    lengths = np.asarray([len(tokens) for tokens in train_tokens.values()], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return {"tokens": np.concatenate([np.asarray(t) for t in train_tokens.values()]),
            "source_starts": starts.astype(np.int32), "source_lengths": lengths.astype(np.int32)}


def sample_mixture_windows(train_arrays: dict[str, jax.Array], key: jax.Array, weights_S, batch: int,
                           seq_len: int) -> jax.Array:
    """[batch, seq_len + 1] windows: each row's source drawn with probability `weights_S`, then a
    uniform offset inside that source (a window never spans two sources)."""
    k_source, k_offset = jax.random.split(key)
    source_B = jax.random.categorical(k_source, jnp.log(jnp.asarray(weights_S, jnp.float32)), shape=(batch,))
    offset_B = jax.random.randint(k_offset, (batch,), 0, train_arrays["source_lengths"][source_B] - seq_len)
    starts_B = train_arrays["source_starts"][source_B] + offset_B
    return train_arrays["tokens"][starts_B[:, None] + jnp.arange(seq_len + 1)].astype(jnp.int32)
