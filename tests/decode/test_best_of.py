"""Best-of-N: every candidate is scored as the reward model scores it alone, best first; prompts of
different lengths decode together as each would alone."""

import jax
import jax.numpy as jnp
import pytest

from lmlab import config as config_lib
from lmlab.decode.best_of import best_of_n, best_of_n_batch
from lmlab.decode.sampling import generate
from lmlab.models import build_model

TINY = ["model.n_layers=1", "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=64",
        "model.max_len=64", "data.seq_len=32"]


def _models():
    policy = build_model(config_lib.load("configs/gpt_shakespeare.py", TINY).model, 40, seed=0)
    rm_config = config_lib.load("configs/gpt_shakespeare.py", TINY + ["task=reward", "model.reward_head=true",
                                                                       "train.init_from=x"])
    return policy, build_model(rm_config.model, 40, seed=1)


def _reward_alone(reward_model, prompt, completion, stop, max_new_tokens):
    ends = [stop] if len(completion) < max_new_tokens else []
    ids = jnp.asarray([prompt + completion + ends])
    return float(reward_model.reward(ids, jnp.asarray([ids.shape[1] - 1]))[0])


def test_best_of_n_ranks_by_the_reward_of_each_sample_alone():
    policy, reward_model = _models()
    prompt, stop = [3, 9, 4], 7
    ranked = best_of_n(policy, reward_model, prompt, n=6, max_new_tokens=10, key=jax.random.key(0), stop_id=stop,
                       temperature=1.5)
    assert len(ranked) == 6 and [s for s, _ in ranked] == sorted((s for s, _ in ranked), reverse=True)
    assert len({tuple(c) for _, c in ranked}) > 1  # sampling gave different candidates
    for score, completion in (ranked[0], ranked[-1]):  # each shape compiles: the two ends suffice
        assert score == pytest.approx(_reward_alone(reward_model, prompt, completion, stop, 10), rel=1e-5, abs=1e-6)
    assert all(stop not in completion for _, completion in ranked)


def test_prompts_of_different_lengths_decode_together_as_each_alone():
    """Greedy, every candidate of a prompt is the prompt's own greedy reply: the left padding of the
    shorter prompt changes nothing, and its candidates are scored without it."""
    policy, reward_model = _models()
    prompts, stop = [[3, 9, 4], [5, 1, 2, 8, 6, 11]], 7
    greedy = best_of_n_batch(policy, reward_model, prompts, n=2, max_new_tokens=8, key=jax.random.key(1),
                             stop_id=stop, temperature=0.0)
    for prompt, candidates in zip(prompts, greedy):
        alone = generate(policy, [prompt], max_new_tokens=8, key=jax.random.key(0), temperature=0.0, eos_id=stop)
        row = alone[0, len(prompt):].tolist()
        expected = row[:row.index(stop)] if stop in row else row
        assert [c for _, c in candidates] == [expected, expected]
        score = _reward_alone(reward_model, prompt, expected, stop, 8)
        assert [s for s, _ in candidates] == pytest.approx([score, score], rel=1e-5, abs=1e-6)
