"""Distillation loss (lmlab.compress.distill) against a hand-computed float64 reference, and its
place in the LM loss: alpha 0 is plain CE, the teacher receives no gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmlab.compress.distill import distill_objective, kl_divergence
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
