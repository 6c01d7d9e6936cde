"""Encoder-decoder Transformer: masking, causality, use of the source, cached decoding, beam search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.decode.beam import beam_search, length_penalty
from lmlab.decode.sampling import generate
from lmlab.models import build_model
from lmlab.models.encdec import PAD_ID

V, BOS = 41, 1


def tiny_encdec_config(**overrides):
    c = config_lib.load_config_file("configs/base.py").model
    c.family = "encdec"
    c.n_layers, c.n_encoder_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.max_len = 2, 1, 32, 4, 4, 64, 64
    c.positions = "sinusoidal"
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


VARIANTS = [  # sinusoidal positions, shared tied embeddings (the original); then the other switches
    {},
    {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2, "tie_embeddings": False,
     "shared_vocab": False, "use_bias": False},
]  # learned positions take the sinusoidal path with a trained table; ALiBi is GPT-tested attention


def padded_sources():
    """[3, 9] sources of lengths 9, 6 and 3, right-padded with PAD_ID."""
    source = np.array(jax.random.randint(jax.random.key(1), (3, 9), 3, V))
    source[1, 6:] = PAD_ID
    source[2, 3:] = PAD_ID
    return jnp.asarray(source)


# Eager NNX calls dispatch op by op (seconds per forward on CPU): tests run the model jitted.
@nnx.jit
def forward(model, target, source):
    return model(target, source=source)[0]


@nnx.jit
def init_cache(model, source):
    return model.init_cache(source.shape[0], 10, source=source)


@nnx.jit
def step(model, token, cache, index):
    return model(token, cache=cache, cache_index=index)


def variant_id(i):
    return ",".join(f"{k}={v}" for k, v in VARIANTS[i].items()) or "base"


@pytest.fixture(scope="module", params=range(len(VARIANTS)), ids=variant_id)
def model(request):
    return build_model(tiny_encdec_config(**VARIANTS[request.param]), V, seed=request.param)


def target_ids(seed):
    return jax.random.randint(jax.random.key(seed), (3, 10), 3, V)


def test_source_padding_is_invisible(model):
    """More padding (as when another source in the batch is longer) changes no output.

    Padding is the id PAD_ID, masked out of encoder self-attention and of cross-attention, so the
    encoder outputs at real positions and every decoder logit must not depend on it.
    """
    source, target = padded_sources(), target_ids(2)
    longer = jnp.pad(source, ((0, 0), (0, 5)), constant_values=PAD_ID)
    np.testing.assert_allclose(forward(model, target, source), forward(model, target, longer), rtol=1e-5, atol=1e-5)


def test_changing_a_future_target_token_leaves_earlier_logits_identical(model):
    source, target = padded_sources(), target_ids(3)
    changed = target.at[:, 6].set((target[:, 6] + 1) % V)
    logits, logits_changed = forward(model, target, source), forward(model, changed, source)
    np.testing.assert_array_equal(np.asarray(logits[:, :6]), np.asarray(logits_changed[:, :6]))
    assert not np.allclose(logits[:, 6:], logits_changed[:, 6:])


def test_the_source_changes_every_target_position(model):
    source, target = padded_sources(), target_ids(4)
    changed = source.at[:, 1].set((source[:, 1] + 1) % (V - 3) + 3)  # a real token in every row
    differs = np.abs(np.asarray(forward(model, target, source) - forward(model, target, changed))).max(axis=-1)
    assert (differs > 1e-6).all()  # cross-attention reaches every target position of every row


def test_cached_step_logits_equal_full_recomputation(model):
    source, target = padded_sources(), target_ids(5)
    full = forward(model, target, source)
    cache, steps = init_cache(model, source), []
    for i in range(10):
        logits, cache = step(model, target[:, i:i + 1], cache, jnp.int32(i))
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


# Decoding: one model, shared results (each decoder is a separate compilation).
MAX_NEW = 8


@pytest.fixture(scope="module")
def decoding():
    model = build_model(tiny_encdec_config(n_layers=1), V, seed=0)  # one decoder layer: quicker to compile
    source, prompt = padded_sources(), jnp.full((3, 1), BOS)
    greedy = generate(model, prompt, max_new_tokens=MAX_NEW, key=jax.random.key(0), temperature=0.0, source=source)
    return model, source, prompt, np.asarray(greedy)


def rescore(model, source_BS, sequences_BL, lengths_B):
    """[B] summed log-probabilities of sequences[b, 1 : 1 + lengths[b]] given the sources, by one
    full forward (teacher forcing), independent of the cached decoding path."""
    sequences_BL = jnp.asarray(sequences_BL)
    lp_BLV = jax.nn.log_softmax(forward(model, sequences_BL[:, :-1], source_BS), axis=-1)
    token_lp_BL = np.asarray(jnp.take_along_axis(lp_BLV, sequences_BL[:, 1:, None], axis=-1)[..., 0])
    scored_BL = np.arange(token_lp_BL.shape[1])[None] < np.asarray(lengths_B)[:, None]
    return (token_lp_BL * scored_BL).sum(axis=1)


def test_cached_greedy_decoding_equals_recomputation(decoding):
    model, source, prompt, greedy = decoding
    recomputed = generate(model, prompt, max_new_tokens=MAX_NEW, key=jax.random.key(0), temperature=0.0,
                          source=source, use_cache=False)
    np.testing.assert_array_equal(greedy, recomputed)
    # Each greedy token is the argmax of a full forward over its prefix.
    np.testing.assert_array_equal(greedy[:, 1:], jnp.argmax(forward(model, greedy[:, :-1], source), axis=-1))


def test_beam_size_one_is_greedy(decoding):
    model, source, prompt, greedy = decoding
    result = beam_search(model, prompt, beam_size=1, max_new_tokens=MAX_NEW, eos_id=-1, pad_id=PAD_ID, source=source)
    np.testing.assert_array_equal(result.sequences[:, 0], greedy)


def test_beam_scores_equal_full_forward_rescoring_and_beat_greedy(decoding):
    model, source, prompt, greedy = decoding
    # No end token here (eos handling is the decoder-independent logic tested in tests/decode):
    # every hypothesis has MAX_NEW tokens, so log-probabilities also compare directly with greedy's.
    result = beam_search(model, prompt, beam_size=4, max_new_tokens=MAX_NEW, eos_id=-1, pad_id=PAD_ID,
                         length_penalty_alpha=0.6, source=source)
    seqs, lps, lengths = map(np.asarray, (result.sequences, result.log_probs, result.lengths))
    assert np.all(lengths == MAX_NEW)
    # Rescored against each prompt's own source: beams reading another row's encoder k/v (a wrong
    # repeat or reorder of the cache) would not match.
    rescored = rescore(model, jnp.repeat(source, 4, axis=0), seqs.reshape(12, -1), lengths.reshape(12))
    np.testing.assert_allclose(lps.reshape(12), rescored, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.scores, lps / np.asarray(length_penalty(result.lengths, 0.6)), rtol=1e-6)
    assert np.all(np.diff(np.asarray(result.scores), axis=1) <= 1e-6)  # sorted best first
    assert all(len({tuple(s) for s in seqs[b]}) == 4 for b in range(3))  # distinct hypotheses
    greedy_lp = rescore(model, source, greedy, np.full(3, MAX_NEW))
    assert np.all(lps[:, 0] >= greedy_lp - 1e-4)
