"""SmolLM2-135M-Instruct imported from its GGUF: the same logits, tokens and text as HF transformers.

The reference (tests/fixtures/make_pretrained_fixtures.py) is transformers' own GGUF loader and
Llama implementation in PyTorch, float32; lmlab runs float32 too, so the logits must agree to
rounding (1e-3 absolute on logits of magnitude ~10-30; measured: ~1e-4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab.chat import chatml_from_template
from lmlab.decode.sampling import generate
from lmlab.tokenizers.bytelevel import bytes_to_unicode

LOGIT_TOL = 1e-3


def forward_logits(model, tokens_BT: np.ndarray) -> np.ndarray:
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])
    return np.asarray(fn(state, jnp.asarray(tokens_BT)))


def test_hyperparameters_come_from_the_gguf_metadata(smollm2):
    config, params, tokenizer = smollm2
    m = config.model
    assert (m.family, m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff) == ("gpt", 30, 576, 9, 3, 1536)
    assert (m.positions, m.norm, m.mlp, m.tie_embeddings, m.use_bias) == ("rope", "rmsnorm", "swiglu", True, False)
    assert m.rope_theta == 100000.0 and m.max_len == 8192
    assert m.norm_eps == pytest.approx(1e-5)
    assert tokenizer.vocab_size == 49152 == params["embed"]["embedding"].shape[0]
    assert (tokenizer.bos_id, tokenizer.eos_id) == (1, 2)  # <|im_start|>, <|im_end|>
    assert config.tokenizer.kind == "bytelevel_bpe"
    assert "lm_head" not in params  # tied: the output projection is the embedding table


def test_logits_match_transformers_at_every_position(smollm2, smollm2_model, smollm2_reference, reference_info):
    """All prompts in one right-padded batch (one compile): causal attention keeps padding invisible."""
    _, _, tokenizer = smollm2
    ref = smollm2_reference
    names = list(reference_info["smollm2"]["prompts"])
    ids = [ref[f"lm/{name}/ids"] for name in names]
    tokens_BT = np.full((len(ids), max(map(len, ids))), tokenizer.pad_id, np.int32)
    for row, seq in enumerate(ids):
        tokens_BT[row, : len(seq)] = seq
    logits_BTV = forward_logits(smollm2_model, tokens_BT)
    subset = ref["vocab_subset"]
    for row, name in enumerate(names):
        logits_TV = logits_BTV[row, : len(ids[row])]
        top_ids, top_ref = ref[f"lm/{name}/top_ids"], ref[f"lm/{name}/top_logits"]
        subset_diff = np.abs(logits_TV[:, subset] - ref[f"lm/{name}/logits_subset"]).max()
        top_diff = np.abs(np.take_along_axis(logits_TV, top_ids, -1) - top_ref).max()
        lse_diff = np.abs(np.asarray(jax.nn.logsumexp(logits_TV, -1)) - ref[f"lm/{name}/logsumexp"]).max()
        assert max(subset_diff, top_diff, lse_diff) < LOGIT_TOL, (name, subset_diff, top_diff, lse_diff)
        # The most likely token agrees wherever the reference's top two are not within tolerance.
        clear = (top_ref[:, 0] - top_ref[:, 1]) > 2 * LOGIT_TOL
        assert clear.mean() > 0.9, name
        np.testing.assert_array_equal(logits_TV.argmax(-1)[clear], top_ids[clear, 0], err_msg=name)


def test_greedy_continuations_match_with_the_kv_cache(smollm2_model, smollm2_reference, reference_info):
    """32 greedy tokens after each prompt's last 20 tokens: one batch through lmlab's cached generate."""
    ref = smollm2_reference
    info = reference_info["smollm2"]
    names, window = list(info["prompts"]), info["greedy_window"]
    prompts_BT = np.stack([ref[f"lm/{name}/ids"][-window:] for name in names])
    out = generate(smollm2_model, prompts_BT, max_new_tokens=info["greedy_tokens"], key=jax.random.key(0),
                   temperature=0.0, use_cache=True)
    for row, name in enumerate(names):
        np.testing.assert_array_equal(np.asarray(out[row, window:]), ref[f"lm/{name}/greedy_window"], err_msg=name)


@pytest.mark.slow
def test_greedy_continuations_of_the_full_prompts(smollm2_model, smollm2_reference, reference_info):
    """Each whole prompt on its own (one compile per prompt length, hence slow)."""
    ref = smollm2_reference
    for name in reference_info["smollm2"]["prompts"]:
        ids = ref[f"lm/{name}/ids"]
        out = generate(smollm2_model, ids[None], max_new_tokens=len(ref[f"lm/{name}/greedy"]),
                       key=jax.random.key(0), temperature=0.0, use_cache=True)
        np.testing.assert_array_equal(np.asarray(out[0, len(ids):]), ref[f"lm/{name}/greedy"], err_msg=name)


def test_tokenizer_ids_match_hf_tokenizers(smollm2, smollm2_reference, reference_info):
    _, _, tokenizer = smollm2
    info = reference_info["smollm2"]
    for i, text in enumerate(info["tokenizer_texts"]):
        assert tokenizer.encode(text) == smollm2_reference[f"tok/{i}"].tolist(), repr(text)
    for name, text in info["prompts"].items():
        assert tokenizer.encode(text) == smollm2_reference[f"lm/{name}/ids"].tolist(), name


def test_decode_inverts_encode(smollm2, reference_info):
    _, _, tokenizer = smollm2
    byte_map = bytes_to_unicode()
    missing = {chr(b) for b in range(128) if tokenizer.token_to_id(byte_map[b]) is None}
    assert "\x04" in missing and "\x00" not in missing
    for text in reference_info["smollm2"]["tokenizer_texts"]:
        # SmolLM2's vocabulary lacks a few control bytes (0x04, 0x06, ...): encoding drops them, as HF does.
        kept = "".join(ch for ch in text if ch not in missing)
        assert tokenizer.decode(tokenizer.encode(text)) == kept


def test_chat_prompts_render_like_the_jinja_template(smollm2, reference_info):
    _, _, tokenizer = smollm2
    chat = chatml_from_template(tokenizer.chat_template)
    assert chat.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for name, case in reference_info["smollm2"]["chats"].items():
        assert chat.render(case["messages"], add_generation_prompt=True) == case["prompt"], name
        assert chat.render(case["messages"], add_generation_prompt=False) == case["no_generation_prompt"], name
