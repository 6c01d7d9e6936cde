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


def test_an_empty_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_bleu([], [])


def test_tricky_cases_by_hand():
    # Longer than the reference: BP 1; the zero 4-gram count is smoothed (sacrebleu's default "exp":
    # the k-th zero precision becomes 1 / (2^k * total)): 3/8, 2/7, 1/6, 1/(2*5).
    result = corpus_bleu(["a b c d e f g h"], ["a b c"])
    expected = 100 * math.exp((math.log(3 / 8) + math.log(2 / 7) + math.log(1 / 6) + math.log(1 / 10)) / 4)
    assert result.brevity_penalty == 1.0 and (result.hyp_len, result.ref_len) == (8, 3)
    assert result.score == pytest.approx(expected, rel=1e-9)
    # No unigram in common: 0, whatever the smoothing.
    assert corpus_bleu(["x y z"], ["a b c"]).score == 0.0
    # 13a splits punctuation off words, so "va ?" and "va?" are the same 6 tokens; accents are letters.
    result = corpus_bleu(["Héllo wörld, ça va ?"], ["Héllo wörld, ça va?"])
    assert result.score == pytest.approx(100.0) and (result.hyp_len, result.ref_len) == (6, 6)
    # An empty hypothesis in a corpus counts as 0 words: BP from the corpus totals 3 / 5.
    result = corpus_bleu(["a b c", ""], ["a b c", "d e"])
    assert (result.hyp_len, result.ref_len) == (3, 5)
    assert result.brevity_penalty == pytest.approx(math.exp(1 - 5 / 3))


@pytest.mark.parametrize(("hypotheses", "references"), [("a b c", "a b d"), (["a b c"], "a"),
                                                         (["a", None], ["a", "b"]), (["a"], [None])])
def test_a_string_or_non_string_sentences_are_a_clear_error(hypotheses, references):
    # A bare string would be scored one character per "sentence"; None fails deep in sacrebleu.
    with pytest.raises(ValueError, match="strings"):
        corpus_bleu(hypotheses, references)
