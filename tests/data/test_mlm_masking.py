"""BERT masking: 15% selected, 80/10/10 split, specials and pads untouched, a function of the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab.data.mlm import heldout_examples, mask_tokens, max_selected, protected_mask, sample_examples

V, MASK, SPECIAL = 40, 5, (1, 2, 3, 4, 5, 6)  # 0 = pad; 5 = [MASK]; 1-4, 6 other specials
ALLOWED = np.setdiff1d(np.arange(V), (0,) + SPECIAL)

mask_fn = jax.jit(lambda tokens, key: mask_tokens(tokens, key, vocab_size=V, mask_id=MASK, special_ids=SPECIAL))


def draw(n_rows=2048, T=64, seed=0):
    """Rows of text ids with specials and trailing pads sprinkled in."""
    rng = np.random.default_rng(seed)
    tokens = rng.choice(ALLOWED, size=(n_rows, T))
    tokens[:, 0], tokens[:, 20] = 1, 6
    lengths = rng.integers(T // 2, T + 1, n_rows)
    tokens[np.arange(T)[None] >= lengths[:, None]] = 0
    return tokens


def test_selection_rate_and_the_80_10_10_split():
    tokens = draw()
    inputs, targets, weights = map(np.asarray, mask_fn(jnp.asarray(tokens), jax.random.key(0)))
    eligible = ~protected_mask(V, SPECIAL)[tokens]
    selected = weights > 0
    np.testing.assert_array_equal(targets, tokens)
    # Exactly max(1, round(15%)) of each row's eligible positions; never a special or a pad.
    np.testing.assert_array_equal(selected.sum(1), np.maximum(1, np.floor(0.15 * eligible.sum(1) + 0.5)))
    assert not (selected & ~eligible).any()
    assert selected.sum(1).max() <= max_selected(tokens.shape[1], 0.15)  # what the loss may gather
    assert selected.sum() / eligible.sum() == pytest.approx(0.15, abs=0.005)
    # Unselected positions are untouched.
    np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
    # Of the selected: 80% [MASK], 10% a random text id (which may equal the original), 10% kept.
    n = selected.sum()  # ~12k
    masked = (inputs == MASK) & selected
    randomized = selected & ~masked & (inputs != tokens)
    kept = selected & (inputs == tokens)
    p_same = 1 / len(ALLOWED)  # a random draw that happens to be the original id
    assert masked.sum() / n == pytest.approx(0.8, abs=0.015)
    assert randomized.sum() / n == pytest.approx(0.1 * (1 - p_same), abs=0.01)
    assert kept.sum() / n == pytest.approx(0.1 + 0.1 * p_same, abs=0.01)
    # Random replacements are text ids only, spread over all of them; selection is spread over positions.
    replaced_ids = inputs[randomized]
    assert set(np.unique(replaced_ids)) == set(ALLOWED)
    per_position = selected.sum(0) / np.maximum(eligible.sum(0), 1)
    assert np.all(np.abs(per_position[eligible.sum(0) > 1000] - 0.15) < 0.04)


def test_masking_is_a_function_of_the_key():
    tokens = jnp.asarray(draw(seed=1))  # the shape above: no second compile
    a = mask_fn(tokens, jax.random.key(3))
    b = mask_fn(tokens, jax.random.key(3))
    c = mask_fn(tokens, jax.random.key(4))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


def test_rows_without_text_select_nothing_and_the_count_is_bounded():
    tokens = jnp.asarray([[1, 0, 0, 0], [1, 7, 0, 0], [7, 8, 9, 10]])
    _, _, weights = mask_fn(tokens, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(weights).sum(1), [0, 1, 1])
    assert max_selected(128, 0.15) == 19 and max_selected(4, 0.15) == 1


def test_examples_are_cls_text_sep():
    stream = jnp.arange(100, 200)
    examples = np.asarray(sample_examples(stream, jax.random.key(0), 8, 10, cls_id=1, sep_id=2))
    assert examples.shape == (8, 10)
    assert (examples[:, 0] == 1).all() and (examples[:, -1] == 2).all()
    np.testing.assert_array_equal(np.diff(examples[:, 1:-1], axis=1), 1)  # contiguous windows of the stream
    held = heldout_examples(np.arange(100, 117), seq_len=8, cls_id=1, sep_id=2)  # 17 tokens, 6 per example
    np.testing.assert_array_equal(held[-1], [1, 112, 113, 114, 115, 116, 2, 0])
    np.testing.assert_array_equal(np.sort(held[(held >= 100)]), np.arange(100, 117))


def test_counts_round_like_the_bound_where_float32_would_not():
    # 0.35 * 90 is just under 31.5 in float64 but rounds up to 32 in float32: the row must select
    # 31, the max_selected bound the loss gathers, not one more.
    tokens = jnp.asarray(np.random.default_rng(0).integers(10, 50, (4, 90)), jnp.int32)
    _, _, weights = mask_tokens(tokens, jax.random.key(0), vocab_size=50, mask_id=3, special_ids=(0, 1, 2), rate=0.35)
    assert max_selected(90, 0.35) == 31
    np.testing.assert_array_equal(np.asarray(weights).sum(1), 31)
