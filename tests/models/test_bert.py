"""BERT encoder: bidirectional attention, padding invariance, block order against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.models.bert import BERT, BertClassifier

VOCAB = 53


def tiny_bert_config(**overrides):
    c = config_lib.load_config_file("configs/bert_shakespeare.py").model
    c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.max_len = 1, 16, 2, 2, 32, 32
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


VARIANTS = [
    {"prenorm": False, "positions": "learned"},                    # original BERT
    {"prenorm": True, "positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "use_bias": False,
     "n_heads": 4, "n_kv_heads": 2, "type_vocab_size": 0, "tie_embeddings": False, "remat": "full"},
]


def random_tokens(key, shape):
    return jax.random.randint(jax.random.key(key), shape, 1, VOCAB)  # no pad (0)


# Each test jits one function holding all its forwards: one compile each, far cheaper on CPU than
# compiling every operation eagerly or compiling per input shape.


@pytest.mark.parametrize("overrides", VARIANTS)
def test_attention_is_bidirectional_but_ignores_padding(overrides):
    model = build_model(tiny_bert_config(**overrides), VOCAB, seed=0)
    tokens = random_tokens(0, (1, 12))
    # Rows of one padded batch (the mask is the default one, tokens != pad, written out):
    padded = jnp.concatenate([tokens, jnp.zeros((1, 5), tokens.dtype)], axis=1)[0]
    rows = jnp.stack([padded,                                       # pads appended
                      padded.at[9].set(padded[9] % (VOCAB - 1) + 1),  # a later token changed
                      padded.at[12:].set(7)])                       # other ids at the masked positions
    mask = jnp.broadcast_to(jnp.arange(17) < 12, (3, 17))

    @nnx.jit
    def run(model, tokens, rows, mask):
        hidden_BTD = model.encode(tokens)
        return hidden_BTD[0], model.encode(rows, padding_mask_BT=mask), model.mlm_logits(hidden_BTD)

    hidden, out, logits = run(model, tokens, rows, mask)
    # Appending pads, or changing what sits at masked positions, leaves every real position as it was.
    np.testing.assert_allclose(out[0, :12], hidden, atol=2e-5)
    np.testing.assert_allclose(out[2, :12], hidden, atol=2e-5)
    # A later token changes earlier outputs: attention is bidirectional.
    assert not np.allclose(out[1, :9], hidden[:9], atol=1e-4)
    assert logits.shape == (1, 12, VOCAB) and logits.dtype == jnp.float32


def test_segment_ids_count_and_dropout_needs_a_key():
    model = build_model(tiny_bert_config(dropout=0.5), VOCAB)
    tokens = jnp.tile(random_tokens(1, (1, 8)), (2, 1))
    segments = jnp.array([[0] * 8, [0] * 4 + [1] * 4])

    @nnx.jit
    def run(model, tokens, segments, key):
        return (model.encode(tokens), model.encode(tokens, segment_ids_BT=segments),
                model.encode(tokens, dropout_key=key))

    default, explicit, dropped = run(model, tokens, segments, jax.random.key(0))
    np.testing.assert_allclose(default[0], explicit[0], atol=1e-6)  # default: segment 0 everywhere
    assert not np.allclose(explicit[0], explicit[1])
    assert not np.allclose(default, dropped)  # dropout=0.5 acts only when given a key


# ---- A one-layer forward written out in float64 numpy, for both block orders ----

def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu_exact(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def reference_forward(p, tokens, real, *, prenorm, n_heads, eps):
    """BERT maths, spelled out: embeddings, (post|pre)-norm block, MLM head, pooler."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    B, T = tokens.shape
    D = p["embed"]["embedding"].shape[1]
    H = D // n_heads
    x = p["embed"]["embedding"][tokens] + p["pos_embed"][:T] + p["type_embed"]["embedding"][0]
    if not prenorm:
        x = _ln(x, p["embed_norm"], eps)
    blk = p["blocks"][0]

    def attn(h):
        qkv = h @ blk["attn"]["qkv"]["kernel"] + blk["attn"]["qkv"]["bias"]
        q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, T, n_heads, H) for i in range(3))
        scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
        scores = np.where(real[:, None, None, :], scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out = np.einsum("bnts,bsnh->btnh", weights, v).reshape(B, T, D)
        return out @ blk["attn"]["out"]["kernel"] + blk["attn"]["out"]["bias"]

    def mlp(h):
        up = _gelu_exact(h @ blk["mlp"]["up"]["kernel"] + blk["mlp"]["up"]["bias"])
        return up @ blk["mlp"]["down"]["kernel"] + blk["mlp"]["down"]["bias"]

    if prenorm:
        x = x + attn(_ln(x, blk["norm1"], eps))
        x = x + mlp(_ln(x, blk["norm2"], eps))
        x = _ln(x, p["final_norm"], eps)
    else:
        x = _ln(x + attn(x), blk["norm1"], eps)
        x = _ln(x + mlp(x), blk["norm2"], eps)
    head = p["mlm_head"]
    h = _ln(_gelu_exact(x @ head["dense"]["kernel"] + head["dense"]["bias"]), head["norm"], eps)
    logits = h @ p["embed"]["embedding"].T + head["bias"]
    pooled = np.tanh(x[:, 0] @ p["pooler"]["kernel"] + p["pooler"]["bias"])
    return x, logits, pooled


@pytest.mark.parametrize("prenorm", [False, True])
def test_one_layer_matches_the_reference_forward(prenorm):
    eps = 1e-12  # BERT checkpoints' value
    cfg = tiny_bert_config(n_layers=1, prenorm=prenorm, positions="learned", mlp="gelu_exact", norm_eps=eps,
                           type_vocab_size=2, tie_embeddings=True, use_bias=True, norm="layernorm")
    model = build_model(cfg, VOCAB, seed=3)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    # Non-trivial norm parameters and biases, so a swapped or missing one shows.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(treedef, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    nnx.update(model, nnx.State(params))

    tokens = np.array(random_tokens(5, (2, 10)))
    tokens[1, 7:] = 0  # the second row is padded
    real = tokens != 0
    hidden, logits, pooled = reference_forward(params, tokens, real, prenorm=prenorm, n_heads=cfg.n_heads, eps=eps)
    @nnx.jit
    def run(model, tokens):
        hidden_BTD = model.encode(tokens)
        return hidden_BTD, model.mlm_logits(hidden_BTD), model.pooled(hidden_BTD)

    got_hidden, got_logits, got_pooled = run(model, jnp.asarray(tokens))
    np.testing.assert_allclose(got_hidden[real], hidden[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_logits[real], logits[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_pooled, pooled, rtol=1e-4, atol=1e-4)
    # The other block order is a different function, so the check above tells them apart.
    params_other = {**params, "final_norm": params["embed_norm"]} if not prenorm else \
        {**params, "embed_norm": params["final_norm"]}
    _, other_logits, _ = reference_forward(params_other, tokens, real, prenorm=not prenorm, n_heads=cfg.n_heads,
                                           eps=eps)
    assert not np.allclose(got_logits[real], other_logits[real], atol=1e-2)


def test_gelu_exact_mlp_is_the_erf_form():
    from lmlab.nn.mlp import make_mlp

    x = jax.random.normal(jax.random.key(6), (3, 8)) * 2
    mlps = {kind: make_mlp(kind, 8, 16, use_bias=True, dtype=jnp.float32, rngs=nnx.Rngs(params=0))
            for kind in ("gelu", "gelu_exact")}
    p = nnx.to_pure_dict(nnx.state(mlps["gelu_exact"], nnx.Param))
    p = jax.tree.map(lambda a: a * 50 + 0.1, p)  # O(1) weights: the two GELU forms then differ visibly
    for mlp in mlps.values():
        nnx.update(mlp, nnx.State(p))
    x64 = np.asarray(x, np.float64)
    want = _gelu_exact(x64 @ p["up"]["kernel"] + p["up"]["bias"]) @ p["down"]["kernel"] + p["down"]["bias"]
    np.testing.assert_allclose(mlps["gelu_exact"](x), want, rtol=1e-5, atol=1e-6)
    assert np.abs(mlps["gelu"](x) - want).max() > 1e-3  # the tanh approximation is not it


def test_classifier_has_the_encoder_parameter_paths_of_bert():
    def paths(model):
        flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
        return {"/".join(map(str, path)) for path, _ in flat}

    bert = build_model(tiny_bert_config(), VOCAB)
    classifier = build_model(tiny_bert_config(n_classes=3), VOCAB)
    assert type(bert) is BERT and type(classifier) is BertClassifier
    mlm_only = {p for p in paths(bert) if p.startswith("mlm_head/")}
    head_only = {p for p in paths(classifier) if p.startswith("classifier/")}
    assert mlm_only and head_only == {"classifier/kernel", "classifier/bias"}
    assert paths(bert) - mlm_only == paths(classifier) - head_only
    logits, cache = nnx.eval_shape(lambda m: m(jnp.ones((4, 9), jnp.int32)), classifier)
    assert logits.shape == (4, 3) and logits.dtype == jnp.float32 and cache is None
    logits, cache = nnx.eval_shape(lambda m: m(jnp.ones((4, 9), jnp.int32)), bert)
    assert logits.shape == (4, 9, VOCAB) and logits.dtype == jnp.float32 and cache is None
