"""A mixture's held-out metrics: each source's, and the mixture's as training samples it."""

import math

import pytest

from lmlab.eval.mixture import combine_source_metrics, mixture_evaluator


def source(nll_total, n_tokens, n_bytes):
    loss = nll_total / n_tokens
    return {"val_loss": loss, "val_ppl": math.exp(loss), "val_bpb": nll_total / math.log(2) / n_bytes,
            "val_tokens": n_tokens, "eval/nll": loss}


def test_the_mixture_is_the_weighted_expectation_per_token_and_per_byte():
    a, b = source(200.0, 100, 400), source(90.0, 30, 30)  # 4 and 1 bytes per token
    got = combine_source_metrics({"a": a, "b": b}, {"a": 0.75, "b": 0.25})
    loss = 0.75 * 2.0 + 0.25 * 3.0
    assert got["val_loss"] == pytest.approx(loss) and got["eval/nll"] == pytest.approx(loss)
    assert got["val_ppl"] == pytest.approx(math.exp(loss))
    # expected bits per window token / expected bytes per window token
    assert got["val_bpb"] == pytest.approx(loss / math.log(2) / (0.75 * 4 + 0.25 * 1))
    assert got["val_tokens"] == 130
    assert got["val_bpb/a"] == a["val_bpb"] and got["val_loss/b"] == b["val_loss"]


def test_mixture_evaluator_passes_its_arguments_to_every_source():
    calls = []

    def make(metrics):
        return lambda params, full=False, batch_size=0: calls.append((params, full, batch_size)) or metrics

    evaluate = mixture_evaluator({"a": make(source(10.0, 10, 10)), "b": make(source(20.0, 10, 10))}, {"a": 0.5, "b": 0.5})
    assert evaluate("p", True, 4)["val_loss"] == pytest.approx(1.5)
    assert calls == [("p", True, 4), ("p", True, 4)]
