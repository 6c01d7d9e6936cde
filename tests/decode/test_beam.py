import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab.decode.beam import beam_search, length_penalty
from lmlab.decode.sampling import generate
from lmlab.models import build_model
from tests.models.test_gpt import tiny_model_config

V, EOS, PAD = 30, 2, 0


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model_config(n_kv_heads=2), V, seed=5)


@pytest.fixture(scope="module")
def prompts():
    return jax.random.randint(jax.random.key(1), (3, 5), 3, V)


def rescore(model, sequence, prompt_len, length):
    """Summed log-probability of sequence[prompt_len : prompt_len + length] by one full forward."""
    logits, _ = model(jnp.asarray(sequence)[None])
    lp = jax.nn.log_softmax(logits[0], axis=-1)
    return float(sum(lp[t - 1, sequence[t]] for t in range(prompt_len, prompt_len + length)))


def test_beam_size_one_is_greedy(model, prompts):
    result = beam_search(model, prompts, beam_size=1, max_new_tokens=12, eos_id=-1, pad_id=PAD)
    greedy = generate(model, prompts, max_new_tokens=12, key=jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(result.sequences[:, 0], greedy)


def test_scores_equal_full_forward_rescoring(model, prompts):
    result = beam_search(model, prompts, beam_size=4, max_new_tokens=10, eos_id=EOS, pad_id=PAD,
                         length_penalty_alpha=0.6)
    seqs, lps, lengths = map(np.asarray, (result.sequences, result.log_probs, result.lengths))
    for b in range(3):
        for k in range(4):
            np.testing.assert_allclose(lps[b, k], rescore(model, seqs[b, k], 5, lengths[b, k]), rtol=1e-4, atol=1e-4)
            cont = seqs[b, k, 5:]
            if EOS in cont[: lengths[b, k]]:  # finished: eos is last, then only padding
                assert cont[lengths[b, k] - 1] == EOS and np.all(cont[lengths[b, k]:] == PAD)
    np.testing.assert_allclose(result.scores, lps / np.asarray(length_penalty(result.lengths, 0.6)), rtol=1e-6)
    assert np.all(np.diff(np.asarray(result.scores), axis=1) <= 1e-6)  # sorted best first


def test_best_beam_is_at_least_as_likely_as_greedy(model, prompts):
    greedy = np.asarray(generate(model, prompts, max_new_tokens=10, key=jax.random.key(0), temperature=0.0))
    result = beam_search(model, prompts, beam_size=4, max_new_tokens=10, eos_id=-1, pad_id=PAD)
    for b in range(3):
        assert float(result.log_probs[b, 0]) >= rescore(model, greedy[b], 5, 10) - 1e-4
    assert len({tuple(s) for s in np.asarray(result.sequences[0])}) == 4  # distinct hypotheses


class AlwaysEos(nnx.Module):
    """A stand-in decoder whose next-token distribution always prefers eos, then token 7."""

    def __init__(self):
        self.bias = nnx.Param(jnp.zeros((V,)).at[EOS].set(5.0).at[7].set(2.0))

    def init_cache(self, batch, max_len):
        return [{"k": jnp.zeros((batch, max_len, 1, 1))}]

    def __call__(self, tokens_BT, *, cache=None, cache_index=0):
        return jnp.broadcast_to(self.bias[...], tokens_BT.shape + (V,)), cache


def test_finished_beams_keep_their_score_and_pad():
    result = beam_search(AlwaysEos(), jnp.array([[3, 4]]), beam_size=2, max_new_tokens=20, eos_id=EOS, pad_id=PAD)
    seqs = np.asarray(result.sequences[0])
    # Beam 1 ends at once with eos; beam 2 takes token 7, then eos; both then only pad.
    np.testing.assert_array_equal(seqs[0, 2:4], [EOS, PAD])
    np.testing.assert_array_equal(seqs[1, 2:5], [7, EOS, PAD])
    assert np.all(seqs[:, 5:] == PAD)
    np.testing.assert_array_equal(result.lengths[0], [1, 2])
    lp = np.asarray(jax.nn.log_softmax(AlwaysEos().bias[...]))
    np.testing.assert_allclose(result.log_probs[0], [lp[EOS], lp[7] + lp[EOS]], rtol=1e-6)


def test_more_beams_than_tokens_is_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        beam_search(AlwaysEos(), jnp.array([[3, 4]]), beam_size=V, max_new_tokens=3, eos_id=EOS, pad_id=PAD)


def test_padded_prompt_batch_searches_each_prompt_as_alone():
    model = build_model(tiny_model_config(positions="sinusoidal", n_kv_heads=2), V, seed=6)
    prompts = [[5, 9, 3], [7, 12, 4, 11, 5, 9, 3], [20, 6, 5, 3, 5]]
    T = max(map(len, prompts))
    padded = jnp.asarray([[PAD] * (T - len(p)) + p for p in prompts])
    kwargs = dict(beam_size=3, max_new_tokens=8, eos_id=EOS, pad_id=PAD, length_penalty_alpha=0.6)
    batch = beam_search(model, padded, prompt_lengths_B=[len(p) for p in prompts], **kwargs)
    for b, prompt in enumerate(prompts):
        alone = beam_search(model, jnp.asarray([prompt]), **kwargs)
        np.testing.assert_array_equal(batch.sequences[b, :, T:], alone.sequences[0, :, len(prompt):])
        np.testing.assert_array_equal(batch.lengths[b], alone.lengths[0])
        np.testing.assert_allclose(batch.scores[b], alone.scores[0], rtol=1e-5, atol=1e-5)


def test_past_max_len_is_refused_like_sampling(prompts):
    """Used to return fewer tokens with no error where sampling refuses."""
    bounded = build_model(tiny_model_config(positions="learned", max_len=16), V, seed=5)
    for decode in (lambda: beam_search(bounded, prompts, beam_size=2, max_new_tokens=12, eos_id=-1, pad_id=PAD),
                   lambda: generate(bounded, prompts, max_new_tokens=12, key=jax.random.key(0))):
        with pytest.raises(ValueError, match="prompt \\+ max_new_tokens = 17 exceeds model.max_len = 16"):
            decode()
