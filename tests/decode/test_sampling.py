import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab.decode.sampling import filter_logits, generate, left_pad, next_token
from lmlab.models import build_model
from tests.models.test_gpt import tiny_model_config


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model_config(n_kv_heads=2), 50, seed=3)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 5, 0.9)])
def test_cached_decoding_equals_recomputation(model, temperature, top_k, top_p):
    prompt = jax.random.randint(jax.random.key(0), (2, 6), 0, 50)
    kwargs = dict(max_new_tokens=24, key=jax.random.key(7), temperature=temperature, top_k=top_k, top_p=top_p)
    cached = generate(model, prompt, use_cache=True, **kwargs)
    recomputed = generate(model, prompt, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_array_equal(cached[:, :6], prompt)


def test_greedy_follows_the_argmax_of_a_full_forward(model):
    prompt = jnp.array([[3, 1, 4, 1, 5]])
    out = generate(model, prompt, max_new_tokens=8, key=jax.random.key(0), temperature=0.0)
    # Causal model: the logits at position t-1 of the whole sequence are those of its prefix.
    logits, _ = model(out)
    np.testing.assert_array_equal(out[0, 5:], jnp.argmax(logits[0, 4:12], axis=-1))


def test_top_k_keeps_exactly_k():
    logits = jnp.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(np.asarray(filter_logits(logits, top_k=2))) & (np.asarray(filter_logits(logits, top_k=2)) > -1e30)
    np.testing.assert_array_equal(kept[0], [False, True, False, True, False])


def test_top_p_keeps_the_smallest_nucleus():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None]
    def kept(p):
        return (np.asarray(filter_logits(logits, top_p=p))[0] > -1e30).tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]


def test_sampling_frequencies_follow_the_tempered_distribution():
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: next_token(logits, k, temperature=1.0))(keys))[:, 0]
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / len(draws), [0.6, 0.3, 0.1], atol=0.015)
    sharp = np.asarray(jax.vmap(lambda k: next_token(logits, k, temperature=0.5))(keys))[:, 0]
    expected = np.array([0.36, 0.09, 0.01]) / 0.46
    np.testing.assert_allclose(np.bincount(sharp, minlength=3) / len(sharp), expected, atol=0.015)


def test_too_long_generation_for_learned_positions_is_refused():
    model = build_model(tiny_model_config(positions="learned"), 50)
    with pytest.raises(ValueError, match="max_len"):
        generate(model, [[1, 2]], max_new_tokens=100, key=jax.random.key(0))


def kept_tokens(logits, **kwargs):
    return (np.asarray(filter_logits(jnp.asarray(logits), **kwargs)) > -1e30).tolist()


def test_ties_at_the_cut_do_not_widen_top_k_or_the_nucleus():
    logits = np.log([[0.4, 0.2, 0.2, 0.2]])
    assert kept_tokens(logits, top_k=2) == [[True, True, False, False]]   # equal logits rank by id
    assert kept_tokens(logits, top_p=0.5) == [[True, True, False, False]]  # 0.4 + 0.2 >= 0.5
    assert kept_tokens(logits, top_k=3, top_p=0.55) == [[True, True, False, False]]


def test_top_p_after_top_k_renormalizes_and_always_keeps_the_best_token():
    logits = np.log([[0.1, 0.5, 0.3, 0.1]])
    # Top-2 renormalized: 0.625, 0.375, so a nucleus of 0.6 is the best token alone.
    assert kept_tokens(logits, top_k=2, top_p=0.6) == [[False, True, False, False]]
    assert kept_tokens(logits, top_k=2, top_p=0.7) == [[False, True, True, False]]
    for p in (0.0, -1.0):  # a degenerate nucleus still leaves the most likely token, not token 0
        assert kept_tokens(logits, top_p=p) == [[False, True, False, False]]


def test_filtering_matches_a_sorted_reference_row_by_row():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 50))  # any leading shape
    out = np.asarray(filter_logits(logits, top_k=20, top_p=0.7))
    for row, filtered in zip(np.asarray(logits).reshape(-1, 50), out.reshape(-1, 50)):
        order = np.argsort(-row, kind="stable")[:20]
        probs = np.exp(row[order] - row[order].max())
        probs /= probs.sum()
        n = int(np.searchsorted(np.cumsum(probs), 0.7) + 1)
        expected = np.zeros(50, bool)
        expected[order[:n]] = True
        np.testing.assert_array_equal(filtered > -1e30, expected)
        np.testing.assert_array_equal(filtered[expected], row[expected])


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_ends_rows_without_changing_the_tokens_before_it(model, use_cache):
    prompt = jax.random.randint(jax.random.key(2), (3, 4), 0, 50)
    kwargs = dict(max_new_tokens=20, key=jax.random.key(1), temperature=1.0, top_k=8, use_cache=use_cache)
    free = np.asarray(generate(model, prompt, **kwargs))
    continuations = free[:, 4:]
    for eos in (np.bincount(continuations.ravel()).argmax(), continuations[0, 2]):  # a frequent token; an early one
        ended = np.asarray(generate(model, prompt, eos_id=int(eos), **kwargs))
        expected = free.copy()
        for row in expected[:, 4:]:
            hits = np.flatnonzero(row == eos)
            if len(hits):
                row[hits[0]:] = eos  # after its first eos a row repeats it
        np.testing.assert_array_equal(ended, expected)
    assert (continuations[0, 2:] == continuations[0, 2]).sum() < 18  # the eos fill really changed row 0


def test_decoding_stops_once_every_row_has_ended():
    calls = []

    class CountingModel(nnx.Module):  # emits token 5 (the end) from its third step on
        def init_cache(self, batch, max_len):
            return {"i": jnp.zeros((), jnp.int32)}

        def __call__(self, tokens_BT, *, cache=None, cache_index=0):
            jax.debug.callback(lambda: calls.append(1))
            favourite = jnp.where(cache["i"] >= 2, 5, 7)
            logits = jax.nn.one_hot(jnp.full(tokens_BT.shape, favourite), 10) * 10.0
            return logits, {"i": cache["i"] + 1}

    out = np.asarray(generate(CountingModel(), [[1, 2]], max_new_tokens=50, key=jax.random.key(0),
                              temperature=0.0, eos_id=5))
    np.testing.assert_array_equal(out[0, :6], [1, 2, 7, 7, 5, 5])
    assert (out[0, 4:] == 5).all()
    assert len(calls) == 4  # the prefill and one call per emitted token (7, 7, 5), not 50


PROMPTS = [[5, 9, 2], [7, 1, 4, 1, 5, 9, 3], [2, 6, 5, 3, 5]]  # lengths 3, 7, 5


def left_padded(prompts, pad=0):
    T = max(map(len, prompts))
    return jnp.asarray([[pad] * (T - len(p)) + p for p in prompts]), jnp.asarray([len(p) for p in prompts])


# Each position kind is checked with a cache in tests/models/test_gpt.py; here the decoding loops.
@pytest.mark.parametrize("positions, use_cache", [("rope", True), ("learned", False)])
def test_padded_prompt_batch_decodes_each_prompt_as_alone(positions, use_cache):
    model = build_model(tiny_model_config(positions=positions, n_kv_heads=2), 50, seed=4)
    prompt_BT, lengths_B = left_padded(PROMPTS, pad=11)  # a pad id that is a real token: masking, not luck
    kwargs = dict(max_new_tokens=10, key=jax.random.key(0), temperature=0.0, use_cache=use_cache)
    batch = generate(model, prompt_BT, prompt_lengths_B=lengths_B, **kwargs)
    np.testing.assert_array_equal(batch[:, :7], prompt_BT)  # pads returned as given
    for row, prompt in zip(np.asarray(batch), PROMPTS):
        alone = generate(model, jnp.asarray([prompt]), **kwargs)
        np.testing.assert_array_equal(row[7:], alone[0, len(prompt):])
    # The lengths are what makes it work: the same batch read as unpadded decodes differently.
    assert not np.array_equal(batch, generate(model, prompt_BT, **kwargs))


def test_left_pad_rounds_the_width_up_and_wider_padding_decodes_the_same(model):
    padded_BT, lengths = left_pad(PROMPTS, multiple=4)
    assert padded_BT.shape == (3, 8) and padded_BT.dtype == np.int32 and lengths == [3, 7, 5]
    np.testing.assert_array_equal(padded_BT[1], [0, 7, 1, 4, 1, 5, 9, 3])
    np.testing.assert_array_equal(left_pad(PROMPTS, multiple=1)[0], left_padded(PROMPTS)[0])
    kwargs = dict(max_new_tokens=6, key=jax.random.key(5), temperature=0.9)
    tight = generate(model, left_padded(PROMPTS)[0], prompt_lengths_B=lengths, **kwargs)
    wide_BT, _ = left_pad(PROMPTS, multiple=32)
    wide = generate(model, wide_BT, prompt_lengths_B=lengths, **kwargs)
    np.testing.assert_array_equal(wide[:, 32:], tight[:, 7:])
    with pytest.raises(ValueError, match="no empty prompt"):
        left_pad([[1, 2], []])


def test_prompt_lengths_all_full_change_nothing(model):
    prompt = jax.random.randint(jax.random.key(2), (2, 6), 0, 50)
    kwargs = dict(max_new_tokens=8, key=jax.random.key(1), temperature=0.8, top_k=10)
    np.testing.assert_array_equal(generate(model, prompt, prompt_lengths_B=[6, 6], **kwargs),
                                  generate(model, prompt, **kwargs))


def test_bad_prompt_lengths_are_refused(model):
    prompt = jnp.ones((2, 4), jnp.int32)
    kwargs = dict(max_new_tokens=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="between 1 and the prompt width 4"):
        generate(model, prompt, prompt_lengths_B=[4, 5], **kwargs)
    with pytest.raises(ValueError, match="between 1 and"):
        generate(model, prompt, prompt_lengths_B=[0, 2], **kwargs)
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, prompt, prompt_lengths_B=[4], **kwargs)
    with pytest.raises(ValueError, match="decoder-only"):
        generate(model, prompt, prompt_lengths_B=[4, 4], source=jnp.ones((2, 3), jnp.int32), **kwargs)
