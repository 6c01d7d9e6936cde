"""model.attention_impl is a pure switch: every family gives the naive outputs with the Pallas kernels.

The ops tests compare the kernels on random tensors; these run them where the models put them:
RoPE + GQA causal self-attention with a KV cache (GPT), padded bidirectional self-attention
(BERT), and padded encoder self-attention plus cross-attention (encoder-decoder).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab.models import build_model
from tests.models.test_bert import tiny_bert_config
from tests.models.test_encdec import padded_sources, target_ids, tiny_encdec_config
from tests.models.test_gpt import tiny_model_config

TOL = dict(rtol=1e-5, atol=1e-5)
TILED = ["pallas"]  # blockwise: same checks cost ~2x more compile time; its op-level tests cover it


@pytest.fixture(autouse=True)
def _full_fp32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


@nnx.jit
def gpt_full_and_cached(model, tokens_BT):
    full_BTV, _ = model(tokens_BT)
    cache = model.init_cache(tokens_BT.shape[0], tokens_BT.shape[1])
    prefill_BTV, cache = model(tokens_BT[:, :7], cache=cache, cache_index=0)
    step_B1V, _ = model(tokens_BT[:, 7:8], cache=cache, cache_index=7)
    return full_BTV, prefill_BTV, step_B1V


@pytest.mark.parametrize("impl", TILED)
def test_gpt_rope_gqa_with_cache(impl):
    tokens = jax.random.randint(jax.random.key(0), (2, 19), 0, 97)
    outputs = {
        name: gpt_full_and_cached(build_model(tiny_model_config(
            positions="rope", n_kv_heads=2, attention_impl=name), 97, seed=0), tokens)
        for name in ("naive", impl)
    }
    for got, want in zip(outputs[impl], outputs["naive"]):
        np.testing.assert_allclose(got, want, **TOL)
    full, _, step = outputs[impl]
    np.testing.assert_allclose(step[:, 0], full[:, 7], **TOL)  # the cache path, inside one impl


@pytest.mark.parametrize("impl", TILED)
def test_bert_with_padding(impl):
    tokens = jax.random.randint(jax.random.key(1), (2, 13), 1, 53)
    mask = jnp.arange(13)[None, :] < jnp.array([[13], [6]])
    encode = nnx.jit(lambda model, tokens, mask: model.encode(tokens, padding_mask_BT=mask))
    got, want = (encode(build_model(tiny_bert_config(attention_impl=name), 53, seed=0), tokens, mask)
                 for name in (impl, "naive"))
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("impl", TILED)
def test_encdec_with_padded_source_and_cross_attention(impl):
    source, target = padded_sources(), target_ids(3)
    forward = nnx.jit(lambda model, target, source: model(target, source=source)[0])
    got, want = (forward(build_model(tiny_encdec_config(attention_impl=name), 41, seed=0), target, source)
                 for name in (impl, "naive"))
    np.testing.assert_allclose(got, want, **TOL)
