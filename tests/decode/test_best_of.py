"""Best-of-N: every candidate is scored as the reward model scores it alone, best first."""

import jax
import jax.numpy as jnp
import pytest

from lmlab import config as config_lib
from lmlab.decode.best_of import best_of_n
from lmlab.models import build_model

TINY = ["model.n_layers=1", "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=64",
        "model.max_len=64", "data.seq_len=32"]


def test_best_of_n_ranks_by_the_reward_of_each_sample_alone():
    policy = build_model(config_lib.load("configs/gpt_shakespeare.py", TINY).model, 40, seed=0)
    rm_config = config_lib.load("configs/gpt_shakespeare.py", TINY + ["task=reward", "model.reward_head=true",
                                                                       "train.init_from=x"])
    reward_model = build_model(rm_config.model, 40, seed=1)
    prompt, stop = [3, 9, 4], 7
    ranked = best_of_n(policy, reward_model, prompt, n=6, max_new_tokens=10, key=jax.random.key(0), stop_id=stop,
                       temperature=1.5)
    assert len(ranked) == 6 and [s for s, _ in ranked] == sorted((s for s, _ in ranked), reverse=True)
    assert len({tuple(c) for _, c in ranked}) > 1  # sampling gave different candidates
    for score, completion in ranked:
        ends = [stop] if len(completion) < 10 else []
        ids = jnp.asarray([prompt + completion + ends])
        alone = float(reward_model.reward(ids, jnp.asarray([ids.shape[1] - 1]))[0])
        assert score == pytest.approx(alone, rel=1e-5, abs=1e-6)
        assert stop not in completion
