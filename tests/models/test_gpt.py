import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab.models import build_model

VOCAB = 97


def tiny_model_config(**overrides):
    c = config_lib.load_config_file("configs/gpt_shakespeare.py").model
    c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.max_len = 2, 32, 4, 4, 64, 64
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


VARIANTS = [
    {},
    {"positions": "learned"},
    {"positions": "sinusoidal", "norm": "rmsnorm", "mlp": "swiglu", "use_bias": False},
    {"n_kv_heads": 2, "tie_embeddings": False},   # GQA
    {"n_kv_heads": 1},                            # MQA
    {"positions": "alibi", "n_kv_heads": 2},      # ALiBi with GQA
    {"norm_position": "post", "n_kv_heads": 2},  # GPT-1 order: norm after each residual add
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_changing_a_future_token_leaves_earlier_logits_identical(overrides):
    model = build_model(tiny_model_config(**overrides), VOCAB, seed=0)
    tokens = jax.random.randint(jax.random.key(0), (2, 20), 0, VOCAB)
    changed = tokens.at[:, 12].set((tokens[:, 12] + 1) % VOCAB)
    logits, _ = model(tokens)
    logits_changed, _ = model(changed)
    np.testing.assert_array_equal(np.asarray(logits[:, :12]), np.asarray(logits_changed[:, :12]))
    assert not np.allclose(logits[:, 12:], logits_changed[:, 12:])


@pytest.mark.parametrize("overrides", VARIANTS)
def test_kv_cache_decoding_matches_full_forward(overrides):
    model = build_model(tiny_model_config(**overrides), VOCAB, seed=1)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, VOCAB)
    full, _ = model(tokens)
    cache = model.init_cache(2, 16)
    prefill, cache = model(tokens[:, :5], cache=cache, cache_index=0)
    steps = [prefill]
    for i in range(5, 16):
        logits, cache = model(tokens[:, i:i + 1], cache=cache, cache_index=i)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


def test_gqa_cache_stores_only_kv_heads():
    mha = build_model(tiny_model_config(), VOCAB)
    mqa = build_model(tiny_model_config(n_kv_heads=1), VOCAB)
    assert mha.kv_cache_bytes_per_token() == 2 * 2 * 4 * 8 * 4
    assert mqa.kv_cache_bytes_per_token() * 4 == mha.kv_cache_bytes_per_token()
    assert mqa.init_cache(3, 10)[0]["k"].shape == (3, 10, 1, 8)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = build_model(tiny_model_config(dtype="bfloat16"), VOCAB)
    assert model.embed.embedding[...].dtype == jnp.float32
    logits, _ = model(jnp.zeros((1, 8), jnp.int32))
    assert logits.dtype == jnp.float32
    ref, _ = build_model(tiny_model_config(), VOCAB)(jnp.zeros((1, 8), jnp.int32))
    np.testing.assert_allclose(logits, ref, atol=0.05)


def test_dropout_is_active_only_with_a_key():
    model = build_model(tiny_model_config(dropout=0.5), VOCAB)
    tokens = jnp.arange(10)[None]
    a, _ = model(tokens)
    b, _ = model(tokens)
    c, _ = model(tokens, dropout_key=jax.random.key(0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def _loss_and_grad(model_config):
    from flax import nnx

    model = build_model(model_config, VOCAB, seed=2)
    graphdef, state = nnx.split(model)
    tokens = jax.random.randint(jax.random.key(2), (4, 33), 0, VOCAB)

    def loss(params):
        logits, _ = nnx.merge(graphdef, nnx.State(params))(tokens[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    params = nnx.to_pure_dict(state)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    return jax.jit(jax.value_and_grad(loss))(params), jaxpr


def test_remat_keeps_gradients_and_is_in_the_program():
    # Whether recomputation lowers peak memory is the compiler's call per backend (XLA:CPU at these
    # sizes barely changes); what the switch must guarantee is identical maths and a remat region.
    (loss_ref, grads_ref), jaxpr_ref = _loss_and_grad(tiny_model_config(n_layers=3))
    assert "remat" not in jaxpr_ref and "checkpoint" not in jaxpr_ref
    for policy in ("full", "dots_saveable"):
        (loss, grads), jaxpr = _loss_and_grad(tiny_model_config(n_layers=3, remat=policy))
        assert jaxpr.count("checkpoint") + jaxpr.count("remat") >= 3  # one region per block
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sinusoidal_positions_and_tokens_start_at_the_same_unit_scale():
    model = build_model(tiny_model_config(positions="sinusoidal", d_model=128, n_heads=4, n_kv_heads=4), 2048)
    table = np.asarray(model.embed.embedding[...])
    assert abs(table.std() * np.sqrt(128) - 1.0) < 0.02  # N(0, 1/d), multiplied by sqrt(d) when embedding
    assert model.embed_scale == pytest.approx(np.sqrt(128))
    assert build_model(tiny_model_config(), VOCAB).embed_scale == 1.0  # GPT-2's 0.02 elsewhere


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_a_sequence_past_max_len_is_refused_instead_of_nan_logits(positions):
    model = build_model(tiny_model_config(positions=positions, max_len=8, n_layers=1), VOCAB)
    with pytest.raises(ValueError, match="exceed model.max_len = 8"):
        model(jnp.zeros((1, 9), jnp.int32))  # was: logits all NaN
    with pytest.raises(ValueError, match="positions 6 .. 9 exceed model.max_len = 8"):
        model(jnp.zeros((1, 4), jnp.int32), cache=model.init_cache(1, 12), cache_index=6)


def _reference_logits(p, c, tokens):
    """The decoder written out in float64 numpy, HF-style: RoPE as q * cos + rotate_half(q) * sin,
    kv heads shared as transformers' repeat_kv (kv head k serves query heads k * N/K .. ),
    SwiGLU down(silu(gate x) * up x), ALiBi's -slope * (i - j) with Press et al.'s slopes; post-norm
    as GPT-1: x = norm1(x + attn(x)); x = norm2(x + mlp(x)), no final norm."""
    from lmlab.nn.positions import alibi_slopes

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    B, T = tokens.shape
    N, K, H = c.n_heads, c.n_kv_heads, c.d_model // c.n_heads
    lin = lambda h, q: h @ q["kernel"] + (q["bias"] if c.use_bias else 0)  # noqa: E731

    def norm(h, q):
        if c.norm == "rmsnorm":
            return h / np.sqrt((h ** 2).mean(-1, keepdims=True) + c.norm_eps) * q["scale"]
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + c.norm_eps) * q["scale"] + (q["bias"] if c.use_bias else 0)

    x = p["embed"]["embedding"][tokens]
    if c.positions == "sinusoidal":  # the original Transformer: sqrt(d) x tokens + sinusoids
        i, pos = np.arange(0, c.d_model, 2), np.arange(T)[:, None]
        sinusoid = np.zeros((T, c.d_model))
        sinusoid[:, 0::2], sinusoid[:, 1::2] = np.sin(pos / 1e4 ** (i / c.d_model)), np.cos(pos / 1e4 ** (i / c.d_model))
        x = x * np.sqrt(c.d_model) + sinusoid
    elif c.positions == "learned":
        x = x + p["pos_embed"][:T]
    ang = np.arange(T)[:, None] / c.rope_theta ** (np.arange(0, H, 2) / H)
    cos, sin = (np.concatenate([f(ang)] * 2, -1)[None, :, None] for f in (np.cos, np.sin))
    rotate_half = lambda t: np.concatenate([-t[..., H // 2:], t[..., :H // 2]], -1)  # noqa: E731
    post = c.norm_position == "post"
    for b in (p["blocks"][i] for i in range(c.n_layers)):
        qkv = lin(x if post else norm(x, b["norm1"]), b["attn"]["qkv"])
        q = qkv[..., :N * H].reshape(B, T, N, H)
        k, v = (qkv[..., (N + i) * H:(N + K + i) * H].reshape(B, T, K, H) for i in (0, K))
        if c.positions == "rope":
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, N // K, axis=2), np.repeat(v, N // K, axis=2)
        s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
        if c.positions == "alibi":
            s = s - alibi_slopes(N)[:, None, None] * (np.arange(T)[:, None] - np.arange(T)[None, :])
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        x = x + lin(np.einsum("bnts,bsnh->btnh", w, v).reshape(B, T, N * H), b["attn"]["out"])
        x = norm(x, b["norm1"]) if post else x
        h, mlp = (x if post else norm(x, b["norm2"])), b["mlp"]
        if c.mlp == "swiglu":
            g = lin(h, mlp["gate"])
            x = x + lin(g / (1 + np.exp(-g)) * lin(h, mlp["up"]), mlp["down"])
        else:
            u = lin(h, mlp["up"])
            x = x + lin(0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3))), mlp["down"])
        x = norm(x, b["norm2"]) if post else x
    x = x if post else norm(x, p["final_norm"])
    return x @ (p["embed"]["embedding"].T if c.tie_embeddings else p["lm_head"]["kernel"])


@pytest.mark.parametrize("overrides", [
    {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2, "tie_embeddings": False},  # main job
    {"positions": "alibi", "n_heads": 6, "n_kv_heads": 3, "d_model": 48, "use_bias": False},  # 6 heads: not 2^k
    {"positions": "sinusoidal", "norm": "rmsnorm", "use_bias": False},
    {"positions": "learned", "tie_embeddings": False},
    {"norm_position": "post", "n_layers": 2},                                            # GPT-1: LayerNorm, GELU
    {"norm_position": "post", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False},
])
def test_forward_matches_a_numpy_reference(overrides):
    from flax import nnx

    c = tiny_model_config(**{"n_layers": 1, **overrides})
    model = build_model(c, VOCAB, seed=0)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))  # O(1) weights: every term matters
    params = jax.tree.unflatten(treedef, [a * 5 + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    nnx.update(model, nnx.State(params))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 11), 0, VOCAB))
    with jax.default_matmul_precision("highest"):
        got = nnx.jit(lambda model, tokens: model(tokens)[0])(model, jnp.asarray(tokens))
    want = _reference_logits(params, c, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---------------------------------------------------------------------------------------------
# Packed rows: segment ids keep documents apart and restart their positions.

PACKING_VARIANTS = [
    {"positions": "learned"},
    {"positions": "sinusoidal"},
    {"positions": "rope", "n_kv_heads": 2},                               # GQA
    {"positions": "alibi", "n_kv_heads": 1},                              # MQA
    {"positions": "rope", "attention_impl": "blockwise", "remat": "full"},  # tiled kernel, remat path
]
DOC_LENGTHS = [5, 7, 3]  # three documents, then one padding token: a row of 16


def _packed_row(key):
    docs = [jax.random.randint(k, (n,), 1, VOCAB) for k, n in zip(jax.random.split(key, 3), DOC_LENGTHS)]
    pad = 16 - sum(DOC_LENGTHS)
    tokens_1T = jnp.concatenate(docs + [jnp.zeros(pad, jnp.int32)])[None]
    segments_1T = jnp.asarray(np.repeat([1, 2, 3, 0], DOC_LENGTHS + [pad]))[None]
    return docs, tokens_1T, segments_1T


@pytest.mark.parametrize("overrides", PACKING_VARIANTS, ids=lambda o: "-".join(map(str, o.values())))
def test_a_packed_row_gives_each_segment_its_logits_alone(overrides):
    model = build_model(tiny_model_config(**overrides), VOCAB, seed=3)
    docs, tokens_1T, segments_1T = _packed_row(jax.random.key(3))
    packed, _ = model(tokens_1T, segment_ids_BT=segments_1T)
    assert np.isfinite(np.asarray(packed)).all()  # the padding token's row included
    start = 0
    for doc in docs:
        alone, _ = model(doc[None])
        np.testing.assert_allclose(packed[:, start:start + len(doc)], alone, rtol=2e-5, atol=2e-5)
        start += len(doc)
    # Without segment ids the later documents see the earlier ones: the ids are what separates them.
    unpacked, _ = model(tokens_1T)
    assert not np.allclose(unpacked[:, 5:12], packed[:, 5:12], atol=1e-3)


def test_packed_row_gradient_is_the_sum_of_the_separate_ones():
    from flax import nnx

    model = build_model(tiny_model_config(positions="rope", n_kv_heads=2, n_layers=1), VOCAB, seed=4)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    docs, tokens_1T, segments_1T = _packed_row(jax.random.key(4))

    def nll(params, tokens_1T, segments_1T=None):  # summed next-token loss inside each document
        logits, _ = nnx.merge(graphdef, nnx.State(params))(tokens_1T, segment_ids_BT=segments_1T)
        lp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens_1T[:, 1:, None], -1)[..., 0]
        same = (segments_1T[:, 1:] == segments_1T[:, :-1]) & (segments_1T[:, 1:] > 0) if segments_1T is not None \
            else jnp.ones_like(lp, bool)
        return -jnp.sum(jnp.where(same, lp, 0.0))

    loss_and_grads = jax.jit(jax.value_and_grad(nll))
    packed_loss, packed_grads = loss_and_grads(params, tokens_1T, segments_1T)
    alone = [loss_and_grads(params, doc[None]) for doc in docs]
    np.testing.assert_allclose(packed_loss, sum(loss for loss, _ in alone), rtol=1e-5)
    summed = jax.tree.map(lambda *g: sum(g), *[grads for _, grads in alone])
    for a, b in zip(jax.tree.leaves(packed_grads), jax.tree.leaves(summed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "rope", "alibi"])
def test_left_padded_prompt_decodes_like_the_prompt_alone(positions):
    """Pad slots carry segment 0 in the cache: later queries never see them, positions skip them."""
    model = build_model(tiny_model_config(positions=positions), VOCAB, seed=5)
    tokens = jax.random.randint(jax.random.key(5), (1, 9), 1, VOCAB)
    alone, _ = model(tokens)
    padded = jnp.concatenate([jnp.full((1, 4), 7, jnp.int32), tokens], axis=1)  # 4 pads, then the prompt
    segments = (jnp.arange(13) >= 4).astype(jnp.int32)[None]
    prefill, cache = model(padded[:, :8], segment_ids_BT=segments[:, :8], cache=model.init_cache(1, 13))
    steps = [prefill[:, 4:]]
    for i in range(8, 13):
        logits, cache = model(padded[:, i:i + 1], cache=cache, cache_index=i)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), alone, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(cache[0]["segment_ids"], segments)


def test_explicit_positions_and_argument_errors():
    model = build_model(tiny_model_config(positions="rope"), VOCAB, seed=6)
    tokens = jax.random.randint(jax.random.key(6), (1, 6), 1, VOCAB)
    # Explicit positions 10..15 give the same rotary logits as 0..5: RoPE scores are relative.
    shifted, _ = model(tokens, positions_BT=jnp.arange(10, 16)[None])
    np.testing.assert_allclose(shifted, model(tokens)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="positions_BT must have shape"):
        model(tokens, positions_BT=jnp.arange(5)[None])
    with pytest.raises(ValueError, match="segment_ids_BT must have shape"):
        model(tokens, segment_ids_BT=jnp.ones((2, 6), jnp.int32))
    alibi = build_model(tiny_model_config(positions="alibi"), VOCAB)
    with pytest.raises(ValueError, match="ALiBi"):
        alibi(tokens, positions_BT=jnp.arange(6)[None])
    learned = build_model(tiny_model_config(positions="learned", max_len=8), VOCAB)
    with pytest.raises(ValueError, match="exceed model.max_len = 8"):
        learned(jnp.zeros((1, 9), jnp.int32), segment_ids_BT=jnp.ones((1, 9), jnp.int32))


def test_pre_norm_is_the_default_and_a_config_without_the_key_builds_the_same_model():
    """Run configs written before model.norm_position existed load as pre-norm, bit-identically."""
    from flax import nnx

    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, VOCAB)
    old = tiny_model_config()
    del old["norm_position"]
    models = [build_model(c, VOCAB, seed=0) for c in (old, tiny_model_config(norm_position="pre"))]
    states = [nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in models]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1]) and "final_norm" in states[0]
    np.testing.assert_array_equal(models[0](tokens)[0], models[1](tokens)[0])
    post = build_model(tiny_model_config(norm_position="post"), VOCAB, seed=0)
    assert "final_norm" not in nnx.to_pure_dict(nnx.state(post, nnx.Param))
