"""Knowledge distillation (Hinton et al. 2015): a student learns from a frozen teacher's softened
next-token distribution as well as from the labels.

Per scored token, with temperature T and weight alpha:

    objective = (1 - alpha) * CE(labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradient on the scale of the hard one as T grows (the soft gradients
shrink as 1/T^2). `CE(labels)` is the task's own per-token objective (label smoothing and z-loss
included), so alpha = 0 is exactly the task without a teacher. The caller masks and averages the
per-token values as it does its own loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def kl_divergence(student_logits_BTV: jax.Array, teacher_logits_BTV: jax.Array, temperature: float) -> jax.Array:
    """KL(teacher_T || student_T) per token [B, T], in nats, both softened by `temperature`."""
    teacher_logp_BTV = jax.nn.log_softmax(teacher_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    student_logp_BTV = jax.nn.log_softmax(student_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(teacher_logp_BTV) * (teacher_logp_BTV - student_logp_BTV), axis=-1)


def token_nll(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]


def distill_objective(objective_BT: jax.Array, student_logits_BTV: jax.Array, teacher_logits_BTV: jax.Array,
                      targets_BT: jax.Array, *, alpha: float, temperature: float) -> tuple[jax.Array, dict]:
    """(per-token objective [B, T], per-token metrics {"distill/kl", "distill/teacher_nll"}).

    The teacher's logits carry no gradient (it is frozen)."""
    teacher_logits_BTV = jax.lax.stop_gradient(teacher_logits_BTV)
    kl_BT = kl_divergence(student_logits_BTV, teacher_logits_BTV, temperature)
    mixed_BT = (1.0 - alpha) * objective_BT + alpha * temperature ** 2 * kl_BT
    return mixed_BT, {"distill/kl": kl_BT, "distill/teacher_nll": token_nll(teacher_logits_BTV, targets_BT)}
