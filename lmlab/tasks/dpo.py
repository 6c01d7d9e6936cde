"""Direct preference optimization (task "dpo"; Rafailov et al. 2023), with TRL's logged names.

Per pair, with policy log-probabilities pi(y|x) of the completions and those of a frozen
reference model (default: the train.init_from run, usually the SFT model):

    r_c = beta * (log pi(y_c|x) - log ref(y_c|x)),   r_r likewise for the rejected completion
    loss = -(1 - eps) * log sigmoid(r_c - r_r) - eps * log sigmoid(r_r - r_c)

(eps = dpo.label_smoothing: the conservative DPO of noisy labels; 0 is plain DPO). At the first
step the policy is the reference, so every reward is 0 and the loss is log 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmlab.config import ConfigError
from lmlab.tasks.pairs import PairTask, sequence_logps


def dpo_terms(policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B, *, beta: float,
              label_smoothing: float = 0.0) -> dict[str, jax.Array]:
    """Per-pair loss and TRL's metrics from summed completion log-probabilities."""
    chosen_B = beta * (policy_chosen_B - ref_chosen_B)
    rejected_B = beta * (policy_rejected_B - ref_rejected_B)
    margin_B = chosen_B - rejected_B
    loss_B = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(margin_B) - label_smoothing * jax.nn.log_sigmoid(-margin_B)
    chosen_B, rejected_B = jax.lax.stop_gradient(chosen_B), jax.lax.stop_gradient(rejected_B)
    return {"loss": loss_B, "rewards/chosen": chosen_B, "rewards/rejected": rejected_B,
            "rewards/accuracies": (chosen_B > rejected_B).astype(jnp.float32), "rewards/margins": chosen_B - rejected_B,
            "logps/chosen": jax.lax.stop_gradient(policy_chosen_B),
            "logps/rejected": jax.lax.stop_gradient(policy_rejected_B)}


def pair_logps(model, batch, dropout_key=None) -> tuple[jax.Array, jax.Array]:
    """Summed completion log-probabilities of the chosen and the rejected rows of a batch."""
    tokens_2BL, weights_2BL = batch["tokens"], batch["weights"]
    logits_2BTV, _ = model(tokens_2BL[:, :-1], dropout_key=dropout_key)
    logps_2B = sequence_logps(logits_2BTV, tokens_2BL, weights_2BL)
    B = tokens_2BL.shape[0] // 2
    return logps_2B[:B], logps_2B[B:]


class DPOTask(PairTask):
    def frozen_sources(self) -> dict[str, str]:
        reference = self.config.dpo.reference or self.config.train.init_from
        if not reference:
            raise ConfigError("task dpo needs a reference model: set train.init_from (the model DPO starts from, "
                              "e.g. an sft run) or dpo.reference")
        return {"reference": reference}

    def pair_terms(self, model, batch, dropout_key, frozen):
        policy_chosen_B, policy_rejected_B = pair_logps(model, batch, dropout_key)
        ref_chosen_B, ref_rejected_B = jax.lax.stop_gradient(pair_logps(frozen["reference"], batch))
        d = self.config.dpo
        return dpo_terms(policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B, beta=d.beta,
                         label_smoothing=d.label_smoothing)
