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
    result = evaluate(lambda params, w, m: {"nll": 2.0 * float(np.sum(m))}, None, windows, weights, byte_lengths, batch_size=2)
    targets = (np.arange(11) % 4)[1:]
    assert result["val_tokens"] == 10
    assert result["val_loss"] == pytest.approx(2.0) and result["eval/nll"] == result["val_loss"]
    assert result["val_ppl"] == pytest.approx(math.exp(2.0))
    assert result["val_bpb"] == pytest.approx(20 / math.log(2) / byte_lengths[targets].sum())


@pytest.mark.parametrize("seq_len", [1, 4, 36, 50])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_metrics_equal_a_naive_pass_over_the_stream(seq_len, batch_size):
    # NLL depends on the (context, target) pair, so a window misaligned by one, a target scored twice
    # or a padded slot scored would change the sums; bytes are those of the 36 targets only.
    rng = np.random.default_rng(seq_len)
    tokens = rng.integers(0, 7, 37)
    table = rng.uniform(0.1, 3.0, (7, 7))
    byte_lengths = np.array([0, 1, 1, 2, 3, 4, 1])

    def eval_step(params, windows, weights):
        return {"nll": float(np.sum(table[windows[:, :-1], windows[:, 1:]] * weights))}

    windows, weights = eval_windows(tokens, seq_len)
    result = evaluate(eval_step, None, windows, weights, byte_lengths, batch_size)
    nll = table[tokens[:-1], tokens[1:]].sum()
    assert result["val_tokens"] == 36
    assert result["val_loss"] == pytest.approx(nll / 36, rel=1e-12)
    assert result["val_ppl"] == pytest.approx(math.exp(nll / 36), rel=1e-12)
    assert result["val_bpb"] == pytest.approx(nll / math.log(2) / byte_lengths[tokens[1:]].sum(), rel=1e-12)
