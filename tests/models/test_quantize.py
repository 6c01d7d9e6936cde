import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs import base
from lmlab.models import build_model
from lmlab.models.quantize import describe, quantize_model
from lmlab.nn.linear import QuantizedArray


def _config(**quant):
    c = base.get_config()
    c.model.update(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=86, tie_embeddings=False, mlp="swiglu")
    c.quant.update(quant)
    return c


def _dtypes(model) -> dict:
    return {"/".join(map(str, p)): (v.get_value().dtype, v.get_value().shape, type(v).__name__)
            for p, v in nnx.to_flat_state(nnx.state(model))}


def test_int4_model_policy_and_logits():
    c = _config(weights="int4", group=32)
    model = build_model(c.model, 64)
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 64)
    float_logits, _ = model(tokens)
    quantize_model(model, c.quant)
    kinds = _dtypes(model)
    assert kinds["blocks/0/mlp/down/kernel_q"] == (jnp.uint8, (43, 32), "QuantizedArray")  # d_ff 86: 2 per byte
    assert kinds["blocks/0/mlp/down/kernel_scale"][1] == (3, 32)  # groups 32, 32, 22
    assert kinds["lm_head/kernel_q"][:2] == (jnp.int8, (32, 64))  # the head: int8 (quant.embeddings)
    assert kinds["embed/embedding_q"][:2] == (jnp.int8, (64, 32))
    assert kinds["blocks/0/norm1/scale"][0] == jnp.float32
    assert not any(name.endswith("/kernel") for name in kinds)
    logits, _ = model(tokens)
    assert 0 < float(jnp.max(jnp.abs(logits - float_logits))) < 0.05


def test_abstract_quantized_model_has_the_eager_one_s_leaves():
    """What load_run restores into (nnx.eval_shape) matches what `lmlab quantize` writes."""
    c = _config(weights="int4", group=64, asymmetric=True, embeddings="float")
    eager = quantize_model(build_model(c.model, 64), c.quant)
    abstract = nnx.eval_shape(lambda: quantize_model(build_model(c.model, 64), c.quant))
    assert _dtypes(abstract) == _dtypes(eager)
    assert _dtypes(eager)["embed/embedding"][2] == "Param" and _dtypes(eager)["lm_head/kernel"][2] == "Param"
    assert nnx.graphdef(abstract) == nnx.graphdef(eager)


def test_none_changes_nothing_and_qat_only_marks():
    c = _config()
    model = build_model(c.model, 64)
    before = _dtypes(model)
    assert _dtypes(quantize_model(model, c.quant)) == before
    qat = quantize_model(build_model(c.model, 64), _config(qat="int4", group=32).quant)
    assert _dtypes(qat) == before  # float weights, trained through fake quantization
    assert qat.blocks[0].attn.qkv.fake.kind == "int4" and qat.lm_head.fake.kind == "int8"
    assert not any(isinstance(v, QuantizedArray) for _, v in nnx.to_flat_state(nnx.state(qat)))


def test_kv_int8_cache_bytes():
    c = _config(kv="int8")
    model = quantize_model(build_model(c.model, 64), c.quant)
    cache = model.init_cache(1, 10)
    assert cache[0]["k"].dtype == jnp.int8 and cache[0]["k_scale"].shape == (1, 10, 2)
    bf16 = build_model(ml_collections.ConfigDict({**c.model.to_dict(), "dtype": "bfloat16"}), 64)
    # head_dim 8: (8 + 2) / 16 of a bfloat16 cache
    assert model.kv_cache_bytes_per_token() * 16 == bf16.kv_cache_bytes_per_token() * 10
    held = sum(x.nbytes for x in jax.tree.leaves([{k: v for k, v in layer.items() if k != "segment_ids"}
                                                  for layer in cache]))
    assert held == 10 * model.kv_cache_bytes_per_token()


def test_describe_names_the_policy():
    text = describe(_config(weights="int4", group=128, kv="int8").quant)
    assert "int4 groups of 128 (symmetric)" in text and "output head: int8" in text and "KV cache: int8" in text
    assert "float32" in describe(_config(weights="int8", embeddings="float").quant).split("head: ")[1]
    assert "fake-quantized while training (QAT)" in describe(_config(qat="int4").quant)


def test_qat_forward_equals_the_quantized_model_s():
    """Trained with quant.qat=int4, a model computes what `lmlab quantize --weights int4` will store."""
    tokens = jax.random.randint(jax.random.key(1), (1, 9), 0, 64)
    qat = quantize_model(build_model(_config().model, 64), _config(qat="int4", group=32).quant)
    stored = quantize_model(build_model(_config().model, 64), _config(weights="int4", group=32).quant)
    np.testing.assert_allclose(qat(tokens)[0], stored(tokens)[0], rtol=1e-5, atol=1e-5)
