"""Fill-mask and passage classification against a plain forward pass of the same model."""

import jax
import numpy as np
import pytest
from flax import nnx

from lmlab import predict
from lmlab.runs import load_run
from tests.tiny_runs import BERT, CLASSIFIER, GPT, write_tiny_run


def forward(model, tokens_BT):
    """The model's own __call__ (jitted: eager op-by-op dispatch is slow on CPU)."""
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])(state, np.asarray(tokens_BT, np.int32)))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return load_run(write_tiny_run(tmp_path_factory.mktemp("bert") / "run", BERT))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return load_run(write_tiny_run(tmp_path_factory.mktemp("cls") / "run", CLASSIFIER))


def test_fill_mask_equals_the_softmax_of_the_full_forward_pass(bert):
    tok = bert.tokenizer
    text = "To b[MASK], or not to [MASK]e"
    results = predict.fill_mask(bert.model, tok, text, top_k=4)
    ids = tok.encode(text)
    tokens = [tok.special_ids["[CLS]"], *ids, tok.special_ids["[SEP]"]]
    logits_TV = forward(bert.model, [tokens])  # the MLM head on every position
    probs_TV = np.asarray(jax.nn.softmax(logits_TV[0], axis=-1))
    mask_positions = [i + 1 for i, t in enumerate(ids) if t == tok.special_ids["[MASK]"]]
    assert len(results) == 2 and len(mask_positions) == 2
    for candidates, position in zip(results, mask_positions):
        expected = np.argsort(-probs_TV[position], kind="stable")[:4]
        assert [c.token_id for c in candidates] == expected.tolist()
        np.testing.assert_allclose([c.prob for c in candidates], probs_TV[position, expected], rtol=1e-5)
        assert all(c.token == tok.decode([c.token_id]) for c in candidates)
    first = results[0][0]
    assert first.text == f"To b{first.token}, or not to [MASK]e"


def test_fill_mask_refuses_text_without_a_mask_and_a_classifier(bert, classifier):
    with pytest.raises(ValueError, match=r"needs a \[MASK\]"):
        predict.fill_mask(bert.model, bert.tokenizer, "no mask here")
    with pytest.raises(ValueError, match="no MLM head"):
        predict.fill_mask(classifier.model, classifier.tokenizer, "To [MASK]")


def test_classify_averages_the_windows_of_a_long_passage(classifier):
    tok, seq_len = classifier.tokenizer, classifier.config.data.seq_len
    assert predict.is_classifier(classifier.config)
    assert predict.class_names(classifier.config) == ["hamlet", "the-tempest"]
    text = "But soft, what light through yonder window breaks?"  # 50 chars: windows of 14, 14, 14, 8
    ids = tok.encode(text)
    L = seq_len - 2
    expected = []
    for i in range(0, len(ids), L):
        window = [tok.special_ids["[CLS]"], *ids[i:i + L], tok.special_ids["[SEP]"]]
        logits = forward(classifier.model, [window])  # unpadded: the pad mask must not matter
        expected.append(np.asarray(jax.nn.softmax(logits[0])))
    assert len(expected) == 4
    probs = predict.classify(classifier.model, tok, text, seq_len)
    np.testing.assert_allclose(probs, np.mean(expected, 0), rtol=1e-5, atol=1e-6)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_classifier_flag_comes_from_the_config(tmp_path):
    run = load_run(write_tiny_run(tmp_path / "gpt", GPT))
    assert not predict.is_classifier(run.config)
    with pytest.raises(ValueError, match="classifier run"):
        predict.classify(run.model, run.tokenizer, "text", 16)
