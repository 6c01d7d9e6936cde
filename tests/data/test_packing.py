"""Packing sequences into rows with segment ids (lmlab.data.packing)."""

import numpy as np

from lmlab.data.packing import pack, target_weights


def test_every_sequence_lands_whole_in_one_row_with_its_own_segment():
    rng = np.random.default_rng(0)
    sequences = [(list(rng.integers(1, 100, n)), list(rng.integers(0, 2, n))) for n in rng.integers(1, 12, 60)]
    rows = pack(sequences, 16)
    assert rows.n_cut == 0 and rows.tokens.shape[1] == 16
    found = []
    for r in range(len(rows.tokens)):
        for segment in range(1, rows.segments[r].max() + 1):
            where = np.flatnonzero(rows.segments[r] == segment)
            assert (np.diff(where) == 1).all()  # contiguous
            found.append((rows.tokens[r, where].tolist(), rows.weights[r, where].astype(int).tolist()))
    assert sorted(found) == sorted((list(map(int, a)), list(map(int, b))) for a, b in sequences)
    assert rows.tokens[rows.segments == 0].sum() == 0 and rows.weights[rows.segments == 0].sum() == 0
    assert len(rows.tokens) <= 1.3 * sum(len(a) for a, _ in sequences) / 16 + 1  # first fit packs densely


def test_long_sequences_are_cut_and_counted():
    rows = pack([([1] * 20, [1] * 20), ([2] * 3, [0] * 3)], 8)
    assert rows.n_cut == 1 and rows.tokens[0].tolist() == [1] * 8


def test_targets_never_cross_segments_or_read_padding():
    segments = np.array([[1, 1, 1, 2, 2, 0]])
    weights = np.ones((1, 6), np.float32)
    # target t+1 from input t: 1->1, 1->1, 1->2 (crosses), 2->2, 2->0 (padding)
    assert target_weights(segments, weights).tolist() == [[1, 1, 0, 1, 0]]
