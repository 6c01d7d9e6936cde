import math

import numpy as np
import pytest

from lmlab.eval.lm import eval_windows, evaluate


def test_windows_cover_every_target_once():
    tokens = np.arange(1, 24)  # 22 targets
    windows, weights = eval_windows(tokens, seq_len=5)
    assert windows.shape == (5, 6) and weights.shape == (5, 5)
    targets = windows[:, 1:][weights > 0]
    np.testing.assert_array_equal(np.sort(targets), tokens[1:])
    # Each window's inputs are the tokens right before its targets.
    np.testing.assert_array_equal(windows[1], [6, 7, 8, 9, 10, 11])


def test_subset_is_fixed_and_evenly_spaced():
    windows, _ = eval_windows(np.arange(1001), seq_len=10, max_windows=5)
    np.testing.assert_array_equal(windows[:, 0], [0, 250, 500, 740, 990])


def test_metrics_from_known_nll():
    # An eval step that charges 2 nats per weighted target: loss 2, ppl e^2, bpb = 2/ln2 * tokens/bytes.
    windows, weights = eval_windows(np.arange(11) % 4, seq_len=4)
    byte_lengths = np.array([0, 1, 2, 3])
    result = evaluate(lambda params, w, m: 2.0 * float(np.sum(m)), None, windows, weights, byte_lengths, batch_size=2)
    targets = (np.arange(11) % 4)[1:]
    assert result["val_tokens"] == 10
    assert result["val_loss"] == pytest.approx(2.0)
    assert result["val_ppl"] == pytest.approx(math.exp(2.0))
    assert result["val_bpb"] == pytest.approx(20 / math.log(2) / byte_lengths[targets].sum())
