"""Distillation loss (lmlab.compress.distill) against a hand-computed float64 reference, and its
place in the LM loss: alpha 0 is plain CE, the teacher receives no gradient; the offline (top-k)
loss equals the online one at k = vocabulary and renormalises over the k ids below it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab.compress.distill import (cached_distill_objective, distill_objective, kl_divergence, teacher_topk,
                                    topk_kl_divergence)
from lmlab.tasks.lm import lm_loss
from lmlab.train.losses import token_cross_entropy

V = 6


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_kl_equals_the_definition_at_a_temperature():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 3, V)) * 2, rng.normal(size=(2, 3, V)) * 2
    for temperature in (1.0, 2.0, 0.5):
        p_log, q_log = log_softmax(teacher / temperature), log_softmax(student / temperature)
        expected = (np.exp(p_log) * (p_log - q_log)).sum(-1)
        got = kl_divergence(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), temperature)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    same = kl_divergence(jnp.asarray(student, jnp.float32), jnp.asarray(student, jnp.float32), 2.0)
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_objective_by_hand_one_token():
    # One token, three classes, T = 2, alpha = 0.9: every term written out.
    student, teacher, target = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.5]), 1
    ce = -log_softmax(student)[target]
    p = np.exp(teacher / 2) / np.exp(teacher / 2).sum()
    q = np.exp(student / 2) / np.exp(student / 2).sum()
    kl = float((p * np.log(p / q)).sum())
    expected = 0.1 * ce + 0.9 * 4.0 * kl
    objective, metrics = distill_objective(jnp.asarray([[ce]], jnp.float32), jnp.asarray([[student]], jnp.float32),
                                           jnp.asarray([[teacher]], jnp.float32), jnp.asarray([[target]]),
                                           alpha=0.9, temperature=2.0)
    assert float(objective[0, 0]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["distill/kl"][0, 0]) == pytest.approx(kl, rel=1e-5)
    assert float(metrics["distill/teacher_nll"][0, 0]) == pytest.approx(-log_softmax(teacher)[target], rel=1e-5)


class TableLM:
    """A 'model' whose logits are a table row per input token (scaled), so losses are exact."""

    def __init__(self, table):
        self.table = table

    def __call__(self, tokens_BT, dropout_key=None):
        return self.table[tokens_BT], None


def test_lm_loss_with_teacher_mixes_ce_and_kl_and_reduces_to_ce_at_alpha_zero():
    rng = np.random.default_rng(1)
    student, teacher = TableLM(jnp.asarray(rng.normal(size=(V, V)), jnp.float32)), TableLM(
        jnp.asarray(rng.normal(size=(V, V)) * 3, jnp.float32))
    windows = jnp.asarray(rng.integers(0, V, (3, 9)), jnp.int32)
    plain = lm_loss(student, windows, None, label_smoothing=0.1)
    at_zero = lm_loss(student, windows, None, label_smoothing=0.1, teacher=teacher, alpha=0.0, temperature=2.0)
    assert float(at_zero.objective) == pytest.approx(float(plain.objective), rel=1e-6)
    mixed = lm_loss(student, windows, None, label_smoothing=0.1, teacher=teacher, alpha=0.5, temperature=2.0)
    objective_BT, nll_BT = token_cross_entropy(student.table[windows[:, :-1]], windows[:, 1:], label_smoothing=0.1)
    kl_BT = kl_divergence(student.table[windows[:, :-1]], teacher.table[windows[:, :-1]], 2.0)
    expected = float((0.5 * objective_BT + 0.5 * 4.0 * kl_BT).mean())
    assert float(mixed.objective) == pytest.approx(expected, rel=1e-5)
    assert float(mixed.metrics["distill/ce"]) == pytest.approx(float(nll_BT.mean()), rel=1e-6)
    assert float(mixed.metrics["distill/kl"]) == pytest.approx(float(kl_BT.mean()), rel=1e-6)
    assert float(mixed.n_targets) == 3 * 8


def test_teacher_gets_no_gradient():
    rng = np.random.default_rng(2)
    windows = jnp.asarray(rng.integers(0, V, (2, 5)), jnp.int32)
    s_table, t_table = (jnp.asarray(rng.normal(size=(V, V)), jnp.float32) for _ in range(2))

    def objective(s, t):
        return lm_loss(TableLM(s), windows, None, teacher=TableLM(t), alpha=0.9, temperature=2.0).objective

    g_student, g_teacher = jax.grad(objective, argnums=(0, 1))(s_table, t_table)
    assert float(jnp.abs(g_teacher).max()) == 0.0 and float(jnp.abs(g_student).max()) > 0.0


# Offline distillation: the teacher's stored top-k (lmlab.compress.topk_cache) instead of its logits.

def test_cached_top_vocab_equals_the_online_loss_on_the_same_batch():
    rng = np.random.default_rng(3)
    student, teacher = TableLM(jnp.asarray(rng.normal(size=(V, V)), jnp.float32)), TableLM(
        jnp.asarray(rng.normal(size=(V, V)) * 3, jnp.float32))
    windows = jnp.asarray(rng.integers(0, V, (3, 9)), jnp.int32)
    cached = teacher_topk(teacher.table[windows[:, :-1]], windows[:, 1:], V)  # k = vocabulary
    for temperature in (1.0, 2.0):
        online = lm_loss(student, windows, None, label_smoothing=0.1, teacher=teacher, alpha=0.7,
                         temperature=temperature)
        offline = lm_loss(student, windows, None, label_smoothing=0.1, cached_teacher=cached, alpha=0.7,
                          temperature=temperature)
        assert float(offline.objective) == pytest.approx(float(online.objective), rel=1e-6)
        for name in ("distill/kl", "distill/teacher_nll", "distill/ce", "nll"):
            assert float(offline.metrics[name]) == pytest.approx(float(online.metrics[name]), rel=1e-5, abs=1e-7)
        # float16 values, as the cache stores them by default: within their rounding
        half = cached._replace(logp_BTK=cached.logp_BTK.astype(jnp.float16))
        rounded = lm_loss(student, windows, None, label_smoothing=0.1, cached_teacher=half, alpha=0.7,
                          temperature=temperature)
        assert float(rounded.objective) == pytest.approx(float(online.objective), rel=2e-3)


def test_top_k_renormalises_both_distributions_over_the_teacher_s_ids():
    """k < vocabulary, by hand: the KL of the teacher's and the student's distributions restricted to
    the teacher's k most likely ids, each renormalised; the tail of the teacher does not matter."""
    student, teacher, target = np.array([0.5, 2.0, -1.0, 1.0, 0.0]), np.array([3.0, 1.0, 2.5, -2.0, 0.0]), 3
    k, temperature = 2, 2.0
    top = [0, 2]  # the teacher's two largest logits
    p = np.exp(teacher[top] / temperature) / np.exp(teacher[top] / temperature).sum()
    q = np.exp(student[top] / temperature) / np.exp(student[top] / temperature).sum()
    kl = float((p * np.log(p / q)).sum())
    cached = teacher_topk(jnp.asarray([[teacher]], jnp.float32), jnp.asarray([[target]]), k)
    np.testing.assert_array_equal(cached.ids_BTK[0, 0], top)
    assert float(cached.nll_BT[0, 0]) == pytest.approx(-log_softmax(teacher)[target], rel=1e-6)  # not in the top 2
    got = topk_kl_divergence(jnp.asarray([[student]], jnp.float32), cached, temperature)
    assert float(got[0, 0]) == pytest.approx(kl, rel=1e-5)
    ce = 1.25
    objective, metrics = cached_distill_objective(jnp.asarray([[ce]]), jnp.asarray([[student]], jnp.float32), cached,
                                                  alpha=0.5, temperature=temperature)
    assert float(objective[0, 0]) == pytest.approx(0.5 * ce + 0.5 * 4.0 * kl, rel=1e-5)
    assert float(metrics["distill/teacher_nll"][0, 0]) == pytest.approx(-log_softmax(teacher)[target], rel=1e-6)
    lower_tail = teacher_topk(jnp.asarray([[teacher - 5.0 * (np.arange(5) % 2)]], jnp.float32),
                              jnp.asarray([[target]]), k)  # ids 1 and 3 (outside the top 2) made less likely
    assert float(topk_kl_divergence(jnp.asarray([[student]], jnp.float32), lower_tail, temperature)[0, 0]) == (
        pytest.approx(kl, rel=1e-5))


def test_cached_teacher_gets_no_gradient_and_the_student_does():
    rng = np.random.default_rng(4)
    windows = jnp.asarray(rng.integers(0, V, (2, 5)), jnp.int32)
    s_table = jnp.asarray(rng.normal(size=(V, V)), jnp.float32)
    cached = teacher_topk(jnp.asarray(rng.normal(size=(2, 4, V)), jnp.float32), windows[:, 1:], 3)

    def objective(s, logp):
        return lm_loss(TableLM(s), windows, None, cached_teacher=cached._replace(logp_BTK=logp), alpha=1.0,
                       temperature=2.0).objective

    g_student, g_logp = jax.grad(objective, argnums=(0, 1))(s_table, cached.logp_BTK)
    assert float(jnp.abs(g_logp).max()) == 0.0 and float(jnp.abs(g_student).max()) > 0.0
