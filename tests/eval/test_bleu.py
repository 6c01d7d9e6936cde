"""The sacrebleu wrapper against BLEU computed by hand on a two-sentence corpus."""

import math

import pytest

from lmlab.eval.bleu import corpus_bleu


def test_corpus_bleu_matches_a_hand_computation():
    hypotheses = ["a b c d e", "p q r s t u"]
    references = ["a b c d e f g", "p q r s x u"]
    # Clipped n-gram matches / hypothesis n-grams, summed over both sentences:
    #   n=1: 5/5 + 5/6 (t is wrong)  n=2: 4/4 + 3/5 (pq qr rs)  n=3: 3/3 + 2/4  n=4: 2/2 + 1/3
    precisions = [10 / 11, 7 / 9, 5 / 7, 3 / 5]
    hyp_len, ref_len = 11, 13  # shorter than the references: brevity penalty exp(1 - 13/11)
    bp = math.exp(1 - ref_len / hyp_len)
    expected = 100 * bp * math.exp(sum(math.log(p) for p in precisions) / 4)

    result = corpus_bleu(hypotheses, references)
    assert result.score == pytest.approx(expected, rel=1e-9)
    assert result.brevity_penalty == pytest.approx(bp, rel=1e-9)
    assert result.precisions == pytest.approx([100 * p for p in precisions], rel=1e-9)
    assert (result.hyp_len, result.ref_len) == (hyp_len, ref_len)
    assert "tok:13a" in result.signature


def test_perfect_and_empty_translations():
    same = "Enregistrer le notebook sous un autre nom"
    assert corpus_bleu([same], [same]).score == pytest.approx(100.0)
    assert corpus_bleu([""], ["Enregistrer le notebook"]).score == 0.0
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu(["a"], ["a", "b"])
