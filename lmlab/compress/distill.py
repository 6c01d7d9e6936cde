"""Knowledge distillation (Hinton et al. 2015): a student learns from a frozen teacher's softened
next-token distribution as well as from the labels.

Per scored token, with temperature T and weight alpha:

    objective = (1 - alpha) * CE(labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradient on the scale of the hard one as T grows (the soft gradients
shrink as 1/T^2). `CE(labels)` is the task's own per-token objective (label smoothing and z-loss
included), so alpha = 0 is exactly the task without a teacher. The caller masks and averages the
per-token values as it does its own loss.

Offline (`lmlab distill cache`, lmlab.compress.topk_cache) the teacher is not run: its k most likely
ids per token and their log-probabilities were stored once (`TeacherTopK`), and the soft term is the
KL between the two distributions restricted to those k ids, each renormalised over them. Why not
keep the tail's mass as one more bucket: the tail's mass at temperature T depends on every logit
outside the top k, which are not stored, so a tail bucket would tie a cache to the temperature it
was made at; renormalised, one cache at T = 1 serves every distill.temperature (softmax(log p / T)
over the k ids is exactly the tempered teacher restricted to them). With k = the vocabulary both
restrictions are the identity and the term is the online one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TeacherTopK(NamedTuple):
    """A teacher's stored view of each token (the offline cache): its `k` most likely next ids,
    their log-probabilities at temperature 1, and its NLL of the actual target."""
    logp_BTK: jax.Array
    ids_BTK: jax.Array
    nll_BT: jax.Array


def kl_divergence(student_logits_BTV: jax.Array, teacher_logits_BTV: jax.Array, temperature: float) -> jax.Array:
    """KL(teacher_T || student_T) per token [B, T], in nats, both softened by `temperature`."""
    teacher_logp_BTV = jax.nn.log_softmax(teacher_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    student_logp_BTV = jax.nn.log_softmax(student_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(teacher_logp_BTV) * (teacher_logp_BTV - student_logp_BTV), axis=-1)


def token_nll(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]


def teacher_topk(teacher_logits_BTV: jax.Array, targets_BT: jax.Array, k: int) -> TeacherTopK:
    """What the offline cache stores of a teacher's logits (float32; the cache picks the dtype)."""
    logp_BTV = jax.nn.log_softmax(teacher_logits_BTV.astype(jnp.float32), axis=-1)
    logp_BTK, ids_BTK = jax.lax.top_k(logp_BTV, k)
    nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return TeacherTopK(logp_BTK, ids_BTK.astype(jnp.int32), nll_BT)


def topk_kl_divergence(student_logits_BTV: jax.Array, teacher: TeacherTopK, temperature: float) -> jax.Array:
    """KL(teacher_T || student_T) per token [B, T] over the teacher's k ids, both renormalised over
    them (module docstring)."""
    teacher_logp_BTK = jax.nn.log_softmax(teacher.logp_BTK.astype(jnp.float32) / temperature, axis=-1)
    student_BTK = jnp.take_along_axis(student_logits_BTV.astype(jnp.float32), teacher.ids_BTK, axis=-1)
    student_logp_BTK = jax.nn.log_softmax(student_BTK / temperature, axis=-1)
    return jnp.sum(jnp.exp(teacher_logp_BTK) * (teacher_logp_BTK - student_logp_BTK), axis=-1)


def _mix(objective_BT, kl_BT, teacher_nll_BT, alpha: float, temperature: float) -> tuple[jax.Array, dict]:
    mixed_BT = (1.0 - alpha) * objective_BT + alpha * temperature ** 2 * kl_BT
    return mixed_BT, {"distill/kl": kl_BT, "distill/teacher_nll": teacher_nll_BT}


def cached_distill_objective(objective_BT: jax.Array, student_logits_BTV: jax.Array, teacher: TeacherTopK, *,
                             alpha: float, temperature: float) -> tuple[jax.Array, dict]:
    """`distill_objective` from a teacher's stored top-k instead of its logits."""
    teacher = jax.tree.map(jax.lax.stop_gradient, teacher)
    return _mix(objective_BT, topk_kl_divergence(student_logits_BTV, teacher, temperature),
                teacher.nll_BT.astype(jnp.float32), alpha, temperature)


def distill_objective(objective_BT: jax.Array, student_logits_BTV: jax.Array, teacher_logits_BTV: jax.Array,
                      targets_BT: jax.Array, *, alpha: float, temperature: float) -> tuple[jax.Array, dict]:
    """(per-token objective [B, T], per-token metrics {"distill/kl", "distill/teacher_nll"}).

    The teacher's logits carry no gradient (it is frozen)."""
    teacher_logits_BTV = jax.lax.stop_gradient(teacher_logits_BTV)
    kl_BT = kl_divergence(student_logits_BTV, teacher_logits_BTV, temperature)
    return _mix(objective_BT, kl_BT, token_nll(teacher_logits_BTV, targets_BT), alpha, temperature)
