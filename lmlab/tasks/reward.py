"""A reward model (task "reward"): a scalar head on the decoder's last token, trained with the
Bradley-Terry loss on preference pairs, -log sigmoid(r(x, y_c) - r(x, y_r)) (as TRL's
RewardTrainer). The model needs model.reward_head; it usually starts from an sft run
(train.init_from), whose parameters it takes, the head starting fresh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmlab.tasks.pairs import PairTask


def bradley_terry_terms(chosen_B: jax.Array, rejected_B: jax.Array) -> dict[str, jax.Array]:
    margin_B = chosen_B - rejected_B
    return {"loss": -jax.nn.log_sigmoid(margin_B), "accuracy": (margin_B > 0).astype(jnp.float32),
            "rewards/chosen": chosen_B, "rewards/rejected": rejected_B, "rewards/margins": margin_B}


class RewardTask(PairTask):
    def pair_terms(self, model, batch, dropout_key, frozen):
        scores_2B = model.reward(batch["tokens"], jnp.maximum(batch["lengths"] - 1, 0), dropout_key=dropout_key)
        B = scores_2B.shape[0] // 2
        return bradley_terry_terms(scores_2B[:B], scores_2B[B:])
