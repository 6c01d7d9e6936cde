"""Mixture windows: sources drawn by weight (within sampling error), never spanning two sources."""

import jax
import numpy as np

from lmlab.data.mixture_windows import mixture_train_arrays, sample_mixture_windows


def test_windows_come_from_each_source_by_weight_and_stay_inside_it():
    # each source's tokens name the source: 0s, 1s, 2s (a window from source s is all s)
    sources = {"a": np.zeros(500, np.uint16), "b": np.ones(40, np.uint16), "c": np.full(3000, 2, np.uint16)}
    arrays = mixture_train_arrays(sources)
    np.testing.assert_array_equal(arrays["source_starts"], [0, 500, 540])
    np.testing.assert_array_equal(arrays["source_lengths"], [500, 40, 3000])
    weights, batch, n_batches, seq_len = np.array([0.5, 0.3, 0.2]), 256, 40, 16
    sample = jax.jit(lambda key: sample_mixture_windows(jax.tree.map(jax.numpy.asarray, arrays), key, weights,
                                                        batch, seq_len))
    rows = np.concatenate([np.asarray(sample(jax.random.key(i))) for i in range(n_batches)])
    assert rows.shape == (batch * n_batches, seq_len + 1)
    assert (rows == rows[:, :1]).all()  # no window crosses into another source
    n = len(rows)
    share = np.bincount(rows[:, 0], minlength=3) / n
    sigma = np.sqrt(weights * (1 - weights) / n)
    assert (np.abs(share - weights) < 4 * sigma).all(), (share, weights)


def test_every_offset_of_a_small_source_is_drawn_and_none_past_its_end():
    tokens = np.arange(10, dtype=np.uint16)  # source b = ids 3..9: windows of 3 + 1 start at 3..6
    arrays = {"tokens": tokens, "source_starts": np.array([0, 3], np.int32), "source_lengths": np.array([3, 7], np.int32)}
    rows = np.asarray(sample_mixture_windows(arrays, jax.random.key(0), np.array([0.0, 1.0]), 2000, 3))
    assert set(rows[:, 0].tolist()) == {3, 4, 5, 6}
    np.testing.assert_array_equal(rows - rows[:, :1], np.tile(np.arange(4), (2000, 1)))
