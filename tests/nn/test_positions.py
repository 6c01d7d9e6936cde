import jax
import jax.numpy as jnp
import numpy as np

from lmlab.nn.positions import apply_rope, rope_angles, sinusoidal_table


def test_sinusoidal_matches_formula():
    table = sinusoidal_table(50, 16)
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            np.testing.assert_allclose(table[p, 2 * i], np.sin(angle), atol=1e-6)
            np.testing.assert_allclose(table[p, 2 * i + 1], np.cos(angle), atol=1e-6)


def _scores(q, k, pos_q, pos_k, theta=10000.0):
    H = q.shape[-1]
    cq, sq = rope_angles(jnp.array([[pos_q]]), H, theta)
    ck, sk = rope_angles(jnp.array([[pos_k]]), H, theta)
    rq = apply_rope(q[None, None, None], cq, sq)[0, 0, 0]
    rk = apply_rope(k[None, None, None], ck, sk)[0, 0, 0]
    return float(jnp.dot(rq, rk))


def test_rope_scores_depend_only_on_offset():
    q, k = jax.random.normal(jax.random.key(0), (2, 32))
    for shift in (1, 17, 300):
        for pq, pk in ((5, 2), (9, 9), (3, 40)):
            np.testing.assert_allclose(_scores(q, k, pq, pk), _scores(q, k, pq + shift, pk + shift), rtol=1e-4, atol=1e-4)
    assert abs(_scores(q, k, 5, 2) - _scores(q, k, 5, 3)) > 1e-3  # and do depend on it


def test_rope_preserves_norm_and_uses_half_split_pairs():
    x = jax.random.normal(jax.random.key(1), (1, 3, 2, 8))
    cos, sin = rope_angles(jnp.arange(3)[None], 8, 10000.0)
    y = apply_rope(x, cos, sin)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    # Position 0 is the identity; at position 1, pair (0, 4) rotates by angle 1 (frequency 1).
    np.testing.assert_allclose(y[0, 0], x[0, 0], atol=1e-6)
    a, b = x[0, 1, 0, 0], x[0, 1, 0, 4]
    np.testing.assert_allclose(y[0, 1, 0, 0], a * np.cos(1) - b * np.sin(1), rtol=1e-5)
    np.testing.assert_allclose(y[0, 1, 0, 4], b * np.cos(1) + a * np.sin(1), rtol=1e-5)


def test_alibi_slopes_follow_the_geometric_sequence():
    from lmlab.nn.positions import alibi_slopes

    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)], rtol=1e-6)
    np.testing.assert_allclose(alibi_slopes(4), [2.0 ** (-2 * (i + 1)) for i in range(4)], rtol=1e-6)
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence (1/2, 1/8).
    np.testing.assert_allclose(alibi_slopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8], rtol=1e-6)
    ratios = alibi_slopes(16)[1:] / alibi_slopes(16)[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)


def test_absolute_positions_past_max_len_are_refused_not_nan():
    # A lookup past the table used to read out of bounds: jnp.take filled NaN, silently.
    import ml_collections
    import pytest
    from flax import nnx

    from lmlab.nn.positions import add_positions, learned_table

    for kind in ("learned", "sinusoidal"):
        m = ml_collections.ConfigDict(dict(positions=kind, max_len=8, d_model=4, n_heads=1))
        table = learned_table(m, init_std=0.02, rngs=nnx.Rngs(params=0))
        x = jnp.zeros((1, 5, 4))
        out, _ = add_positions(m, x, table, offset=3)  # positions 3..7: the last rows of the table
        want = table[...][3:8] if kind == "learned" else sinusoidal_table(8, 4)[3:8]
        np.testing.assert_allclose(out[0], want, atol=1e-6)
        with pytest.raises(ValueError, match="positions 4 .. 8 exceed model.max_len = 8"):
            add_positions(m, x, table, offset=4)
        with pytest.raises(ValueError, match="exceed model.max_len"):
            add_positions(m, jnp.zeros((1, 9, 4)), table)
    # rope and alibi have no table: any length goes.
    m = ml_collections.ConfigDict(dict(positions="rope", max_len=8, d_model=4, n_heads=1, rope_theta=1e4))
    _, (cos, _) = add_positions(m, jnp.zeros((1, 9, 4)), None, offset=4)
    np.testing.assert_allclose(cos[0, -1], np.cos(12.0 / 1e4 ** (np.arange(0, 4, 2) / 4)), rtol=1e-5)


def test_positions_from_segments_restart_at_every_segment():
    from lmlab.nn.positions import positions_from_segments

    ids = jnp.array([[0, 0, 1, 1, 1, 2, 2, 3], [1, 1, 1, 1, 1, 1, 0, 0], [5, 5, 4, 4, 5, 5, 5, 0]])
    np.testing.assert_array_equal(positions_from_segments(ids), [[0, 1, 0, 1, 2, 0, 1, 0],
                                                                 [0, 1, 2, 3, 4, 5, 0, 1],
                                                                 [0, 1, 0, 1, 0, 1, 2, 0]])
    assert positions_from_segments(ids).dtype == jnp.int32
def test_no_positions_add_nothing_and_a_causal_decoder_sees_only_the_prefix_set():
    """NoPE: the embeddings pass through unchanged, so the last logits of a one-layer causal GPT
    depend on which tokens precede the last one, not on their order (deeper layers see prefix
    states that do); with RoPE they do depend on it."""
    import ml_collections
    from flax import nnx

    from lmlab import config as config_lib
    from lmlab.models import build_model
    from lmlab.nn.positions import add_positions, learned_table

    m = ml_collections.ConfigDict(dict(positions="none", max_len=8, d_model=4, n_heads=1))
    x = jax.random.normal(jax.random.key(0), (2, 20, 4))  # longer than max_len: no table, no limit
    assert learned_table(m, init_std=0.02, rngs=nnx.Rngs(params=0)) is None
    out, rope = add_positions(m, x, None, offset=5)
    assert rope is None
    np.testing.assert_array_equal(out, x)

    tokens = jnp.array([[5, 9, 2, 7, 3, 11]])
    shuffled = jnp.array([[7, 2, 5, 9, 3, 11]])  # the same prefix in another order, same last token
    last = {}
    for kind in ("none", "rope"):
        c = config_lib.load_config_file("configs/gpt_shakespeare.py").model
        c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.max_len, c.positions = 1, 32, 4, 4, 64, 16, kind
        model = build_model(c, 16, seed=0)
        last[kind] = [np.asarray(model(t)[0][0, -1]) for t in (tokens, shuffled)]
    # Logits are ~0.1 at init (std 0.02 weights): rounding differs by ~1e-8, order by ~1e-4.
    np.testing.assert_allclose(last["none"][0], last["none"][1], rtol=0, atol=1e-6)
    assert np.abs(last["rope"][0] - last["rope"][1]).max() > 2e-5
