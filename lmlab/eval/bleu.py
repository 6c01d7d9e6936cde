"""Corpus BLEU through sacrebleu, the standard implementation (Post 2018), so scores are comparable.

BLEU = BP * exp(mean_n log p_n) * 100 over n = 1..4, where p_n is the clipped n-gram precision
summed over the whole corpus and BP = min(1, exp(1 - ref_len / hyp_len)) the brevity penalty.
sacrebleu fixes the details that make hand-rolled BLEU incomparable: its own tokenization
("13a", the WMT mteval one) of detokenized text, and exponential smoothing of zero counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BleuResult:
    score: float                  # 0..100
    precisions: tuple[float, ...]  # n-gram precisions in percent, n = 1..4
    brevity_penalty: float
    hyp_len: int
    ref_len: int
    signature: str                # sacrebleu's description of the settings, for reports

    def as_dict(self, prefix: str = "bleu") -> dict:
        return {prefix: self.score, f"{prefix}_bp": self.brevity_penalty}


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a") -> BleuResult:
    """Corpus BLEU of detokenized hypotheses against one reference each."""
    from sacrebleu.metrics import BLEU

    # A bare string would pass as a sequence of one-character "sentences" and score silently.
    for name, sentences in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"{name} must be a sequence of strings, one per sentence")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if len(hypotheses) == 0:  # sacrebleu fails with an IndexError deep inside
        raise ValueError("no hypotheses to score: corpus BLEU of an empty corpus is undefined")
    metric = BLEU(tokenize=tokenize)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return BleuResult(float(result.score), tuple(float(p) for p in result.precisions), float(result.bp),
                      int(result.sys_len), int(result.ref_len), str(metric.get_signature()))
