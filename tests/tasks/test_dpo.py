"""Preference tasks: the DPO and Bradley-Terry losses against hand-computed values, preference
files, and tiny dpo / reward runs from a pretrained tiny GPT (reference frozen, loss log 2 at the
first step, held-out rewards/accuracies reported)."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab.data.preferences import read_pairs
from lmlab.tasks import get_task
from lmlab.tasks.dpo import dpo_terms
from lmlab.tasks.reward import bradley_terry_terms
from lmlab.train import loop
from lmlab.train.metrics import read_metrics

BASE = ["--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char", "--config.data.seq_len=32",
        "--config.data.batch_size=8", "--config.model.n_layers=1", "--config.model.d_model=32",
        "--config.model.n_heads=2", "--config.model.n_kv_heads=1", "--config.model.d_ff=64",
        "--config.model.max_len=64", "--config.train.warmup_steps=1", "--config.train.steps_per_call=5",
        "--config.train.eval_every=10", "--config.train.checkpoint_every=10", "--config.train.log_every=1",
        "--config.train.eval_batches=2", "--config.sample.prompts=()"]


def test_dpo_loss_and_metrics_by_hand():
    # beta 0.1: r_c = 0.1 * (-10 + 11) = 0.1, r_r = 0.1 * (-12 + 11) = -0.1, margin 0.2.
    terms = dpo_terms(jnp.array([-10.0]), jnp.array([-12.0]), jnp.array([-11.0]), jnp.array([-11.0]), beta=0.1)
    assert float(terms["loss"][0]) == pytest.approx(math.log(1 + math.exp(-0.2)), rel=1e-6)  # 0.598139
    assert float(terms["rewards/chosen"][0]) == pytest.approx(0.1) and float(terms["rewards/rejected"][0]) == pytest.approx(-0.1)
    assert float(terms["rewards/margins"][0]) == pytest.approx(0.2) and float(terms["rewards/accuracies"][0]) == 1.0
    assert float(terms["logps/chosen"][0]) == -10.0 and float(terms["logps/rejected"][0]) == -12.0
    smoothed = dpo_terms(jnp.array([-10.0]), jnp.array([-12.0]), jnp.array([-11.0]), jnp.array([-11.0]), beta=0.1,
                         label_smoothing=0.1)
    expected = 0.9 * math.log(1 + math.exp(-0.2)) + 0.1 * math.log(1 + math.exp(0.2))
    assert float(smoothed["loss"][0]) == pytest.approx(expected, rel=1e-6)
    same = dpo_terms(jnp.array([-3.0]), jnp.array([-5.0]), jnp.array([-3.0]), jnp.array([-5.0]), beta=0.5)
    assert float(same["loss"][0]) == pytest.approx(math.log(2)) and float(same["rewards/accuracies"][0]) == 0.0


def test_bradley_terry_by_hand():
    terms = bradley_terry_terms(jnp.array([2.0, -1.0]), jnp.array([0.5, 1.0]))
    np.testing.assert_allclose(terms["loss"], [math.log(1 + math.exp(-1.5)), math.log(1 + math.exp(2.0))], rtol=1e-6)
    assert terms["accuracy"].tolist() == [1.0, 0.0] and terms["rewards/margins"].tolist() == [1.5, -2.0]


def write_pairs(path, n=80):
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(n):
        prompt = "".join(rng.choice(list("abcdefgh"), 6))
        lines.append(json.dumps({"prompt": prompt + ":", "chosen": " yes, good", "rejected": " no, bad"}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("record, words", [
    ({"prompt": "p", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "\"prompt\" must be a string or a list of messages"),
    ({"prompt": [{"role": "narrator", "content": "x"}], "chosen": "a", "rejected": "b"}, "role 'narrator'"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "\"chosen\" must be a string"),
])
def test_bad_preference_lines_are_one_line_errors(tmp_path, record, words):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError) as info:
        read_pairs(path)
    assert "p.jsonl:2: " in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


def test_chat_prompts_and_assistant_completions_are_read(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                                "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"}) + "\n")
    (pair,) = read_pairs(path)
    assert pair.prompt == ({"role": "user", "content": "hi"},) and (pair.chosen, pair.rejected) == ("hello", "go away")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("base")
    loop.train(config_lib.load("configs/gpt_shakespeare.py", [*BASE, "--config.train.steps=10"]), run_dir,
               progress=False)
    return run_dir


def test_dpo_starts_at_log_2_and_learns_the_preference(base_run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    config = config_lib.load("configs/gpt_shakespeare.py", [
        *BASE, "--config.task=dpo", f"--config.data.corpus={pairs}", f"--config.train.init_from={base_run}",
        "--config.train.steps=20", "--config.dpo.beta=0.5", "--config.train.learning_rate=3e-3"])
    summary = loop.train(config, tmp_path / "dpo", progress=False)
    records = read_metrics(tmp_path / "dpo")
    first = next(r for r in records if r.get("step") == 1 and "loss" in r)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/margins"] == pytest.approx(0, abs=1e-5)
    assert {"rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected"} <= set(first)
    assert summary["eval/rewards/accuracies"] == 1.0 and summary["eval/rewards/margins"] > 0
    assert summary["val_loss"] == summary["eval/loss"] < math.log(2)
    assert (tmp_path / "dpo" / "frozen.json").read_text().count(str(base_run.resolve())) == 1


def test_reward_model_ranks_held_out_pairs(base_run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    config = config_lib.load("configs/gpt_shakespeare.py", [
        *BASE, "--config.task=reward", "--config.model.reward_head=true", f"--config.data.corpus={pairs}",
        f"--config.train.init_from={base_run}", "--config.train.steps=20", "--config.train.learning_rate=3e-3"])
    summary = loop.train(config, tmp_path / "rm", progress=False)
    assert summary["eval/accuracy"] == 1.0 and summary["eval/rewards/margins"] > 0
    assert "accuracy" in read_metrics(tmp_path / "rm")[0]


def test_dpo_without_a_reference_and_reward_without_a_head_are_refused(tmp_path):
    config = config_lib.load("configs/gpt_shakespeare.py", ["--config.task=dpo"])
    with pytest.raises(config_lib.ConfigError, match="task dpo needs a reference model"):
        get_task(config).frozen_sources()
    with pytest.raises(config_lib.ConfigError, match="model.reward_head.*must be true for task=reward"):
        config_lib.load("configs/gpt_shakespeare.py", ["--config.task=reward"])


@pytest.mark.slow  # the CLI end to end; the ranking itself: tests/decode/test_best_of.py
def test_sample_best_of_n_by_the_reward_model(base_run, tmp_path):
    """`lmlab sample RUN --best-of N --reward RM`: the printed sample is the reward model's top pick."""
    import subprocess
    import sys

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    rm = tmp_path / "rm"
    loop.train(config_lib.load("configs/gpt_shakespeare.py", [
        *BASE, "--config.task=reward", "--config.model.reward_head=true", f"--config.data.corpus={pairs}",
        f"--config.train.init_from={base_run}", "--config.train.steps=10"]), rm, progress=False)
    cmd = [sys.executable, "-m", "lmlab.cli", "-v", "sample", str(base_run), "--prompt", "abc:", "--best-of", "4",
           "--reward", str(rm), "--max-new-tokens", "8", "--temperature", "1.0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = [float(line.rsplit(" ", 1)[1]) for line in proc.stderr.splitlines() if "best-of-4: candidate" in line]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert proc.stdout.startswith("abc:")
    wrong = subprocess.run(cmd[:-6] + ["--reward", str(base_run)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "is a 'lm' run, not a reward model" in wrong.stderr.strip().splitlines()[-1]
