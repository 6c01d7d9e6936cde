"""Supervised fine-tuning (task sft): the loss is on the assistant tokens of packed conversations,
each conversation in a row scores as it would alone; a tiny run trains, evaluates and chats."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.chat import ChatML, encode_conversation
from lmlab.data.packing import pack
from lmlab.tasks import get_task
from lmlab.tasks.sft import SFTTask
from lmlab.tokenizers import train_tokenizer
from lmlab.train import loop
from lmlab.train.state import init_state

TINY = ["--config.task=sft", "--config.tokenizer.kind=char", "--config.data.seq_len=48",
        "--config.data.batch_size=4", "--config.model.n_layers=1", "--config.model.d_model=32",
        "--config.model.n_heads=2", "--config.model.n_kv_heads=1", "--config.model.d_ff=64",
        "--config.model.max_len=64", "--config.train.warmup_steps=2", "--config.train.steps_per_call=5",
        "--config.train.eval_every=10", "--config.train.checkpoint_every=10", "--config.train.log_every=5",
        "--config.train.eval_batches=2", "--config.sample.prompts=()"]


def conversations(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a, b = rng.integers(0, 50, 2)
        yield {"messages": [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": str(a + b)}]}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "sums.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations(300)))
    return path


def tiny(data_file, steps, *extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*TINY, f"--config.data.corpus={data_file}",
                                                           f"--config.train.steps={steps}", *extra])


def test_packed_conversations_score_as_each_alone(data_file, tmp_path):
    config = tiny(data_file, 10, "--config.data.seq_len=63")
    tokenizer = train_tokenizer("char", "0123456789+? user assistant\n", vocab_size=0,
                                special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), out_dir=tmp_path)
    chats = [c["messages"] for c in conversations(2, seed=1)]
    encoded = [encode_conversation(tokenizer, ChatML(), m) for m in chats]
    packed = pack(encoded, 64)
    assert len(packed.tokens) == 1 and packed.segments.max() == 2
    alone = [pack([e], 64) for e in encoded]
    _, graphdef, _, state = init_state(config, tokenizer.vocab_size)
    task = SFTTask(config)

    @jax.jit
    def loss(tokens, segments, weights):
        model = nnx.merge(graphdef, nnx.State(state["params"]))
        return task.loss(model, {"tokens": tokens, "segments": segments, "weights": weights}, None, {})

    whole = loss(packed.tokens, packed.segments, packed.weights)
    parts = [loss(rows.tokens, rows.segments, rows.weights) for rows in alone]
    counts = [float(p.n_targets) for p in parts]
    assert float(whole.n_targets) == sum(counts) == sum(sum(w) for _, w in encoded)  # replies + <|im_end|>
    expected = sum(float(p.objective) * n for p, n in zip(parts, counts)) / sum(counts)
    assert float(whole.objective) == pytest.approx(expected, rel=1e-5)
    assert float(whole.metrics["nll"]) == pytest.approx(expected, rel=1e-5)
    # Another first conversation (different tokens, same length) leaves the second one's loss as it was.
    other = pack([([t if w else 9 for t, w in zip(*encoded[0])], encoded[0][1]), encoded[1]], 64)
    changed = loss(other.tokens, other.segments, other.weights)
    second = loss(other.tokens, other.segments, other.weights * (other.segments == 2))
    assert float(changed.objective) != float(whole.objective)
    assert float(second.objective) == pytest.approx(float(parts[1].objective), rel=1e-5)


@pytest.fixture(scope="module")
def sft_run(data_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    summary = loop.train(tiny(data_file, 30), run_dir, progress=False)
    return run_dir, summary


def test_tiny_sft_run_learns_from_the_replies(sft_run):
    run_dir, summary = sft_run
    info = json.loads((run_dir / "data" / "sft.json").read_text())
    assert info["train_conversations"] + info["val_conversations"] == 300 and info["train_cut"] == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20, 30] and evals[-1]["eval/nll"] == evals[-1]["val_loss"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert summary["val_tokens"] > 0 and "nll" in records[0]


def test_long_conversations_are_cut_and_counted(tmp_path, caplog):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "x" * n},
                                                     {"role": "assistant", "content": "y" * 10}]}) + "\n"
                            for n in (5, 80, 6, 90, 7)))
    caplog.set_level("INFO", logger="lmlab")
    SFTTask(tiny(path, 10)).prepare(tmp_path / "run")
    info = json.loads((tmp_path / "run" / "data" / "sft.json").read_text())
    assert info["train_cut"] + info["val_cut"] == 2
    assert "longer than a row were cut to 49 tokens" in caplog.text


def test_chat_command_keeps_history_and_resets(sft_run):
    run_dir, _ = sft_run
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "chat", str(run_dir), "--temperature", "0",
                           "--max-new-tokens", "4"], input="1+2?\n3+4?\n/reset\n1+2?\n", capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[2] == "(history cleared)"
    assert lines[3] == lines[0]  # the same first question after a reset, greedy: the same reply


@pytest.mark.parametrize("line, words", [
    ("[1]", "expected a JSON object"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "has role 'bot'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant turn"),
])
def test_bad_conversation_file_is_one_line_and_leaves_nothing(tmp_path, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(next(conversations(1))) + "\n" + line + "\n")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *TINY,
                           f"--config.data.corpus={path}", "--workdir", str(run_dir), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lmlab: error:") and f"{path}:2" in last and words in last
    assert not run_dir.exists()


def test_sft_trains_only_decoders():
    config = config_lib.load("configs/bert_shakespeare.py", ["--config.task=sft"])
    with pytest.raises(config_lib.ConfigError, match="task 'sft' trains model.family gpt, not 'bert'"):
        get_task(config)


def test_preference_set_from_the_models_own_replies(sft_run, tmp_path):
    """python -m lmlab.data.make_preferences: K sampled replies per prompt, chosen = best chrF
    against the reference, rejected = worst, ties dropped; held-out pairs from the held-out split."""
    from sacrebleu.metrics import CHRF

    from lmlab.data.make_preferences import best_and_worst
    from lmlab.data.preferences import read_pairs, split_pairs

    assert best_and_worst(["same", "same"], "ref") is None
    chosen, rejected, high, low = best_and_worst(["le chat", "xyz", "le chat noir"], "le chat noir")
    assert (chosen, rejected) == ("le chat noir", "xyz") and high == CHRF().sentence_score("le chat noir", ["le chat noir"]).score > low

    run_dir, _ = sft_run
    data = json.loads((run_dir / "config.json").read_text())["data"]["corpus"]
    out = tmp_path / "pairs.jsonl"
    proc = subprocess.run([sys.executable, "-m", "lmlab.data.make_preferences", str(run_dir), "--out", str(out),
                           "--corpus", data, "--k", "3", "--limit", "6", "--max-new-tokens", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["pairs"] == len(records) > 0
    assert all(r["chrf_chosen"] > r["chrf_rejected"] for r in records)
    train, val = split_pairs(read_pairs(out))
    assert len(train) + len(val) == len(records) and {r["split"] for r in records} <= {"train", "val"}


def test_chat_translation_batches_equal_each_prompt_alone(sft_run):
    """lmlab.eval.chat_translation decodes left-padded batches: every reply equals the prompt's own."""
    from lmlab.eval.chat_translation import evaluate, translate_batch
    from lmlab.runs import load_run

    run = load_run(sft_run[0])
    sources = ["1+2?", "12+34? 5", "7"]
    batched = translate_batch(run.model, run.tokenizer, sources, max_new_tokens=5)
    assert batched == [translate_batch(run.model, run.tokenizer, [s], max_new_tokens=5)[0] for s in sources]
    result = evaluate(run, [("1+2?", "3"), ("2+2?", "4")], batch_size=2, max_new_tokens=4)
    assert result["pairs"] == 2 and 0.0 <= result["bleu"] <= 100.0 and 0.0 <= result["chrf"] <= 100.0


def test_chat_translation_best_of_one_near_zero_temperature_is_the_greedy_reply(sft_run):
    """The best-of path (prompts, stop token, decoding) agrees with the greedy one where it must:
    one sample at a vanishing temperature is the argmax reply, whatever the reward model says."""
    from types import SimpleNamespace

    from lmlab.eval.chat_translation import best_of_batch, main, translate_batch
    from lmlab.models import build_model
    from lmlab.runs import load_run

    run = load_run(sft_run[0])
    rm_config = config_lib.apply_overrides(run.config, ["task=reward", "model.reward_head=true"])
    reward = SimpleNamespace(model=build_model(rm_config.model, run.tokenizer.vocab_size, seed=3))
    sources = ["1+2?", "12+34? 5"]
    picked = best_of_batch(run.model, reward.model, run.tokenizer, sources, n=1, max_new_tokens=5,
                           temperature=1e-4, key=jax.random.key(0))
    assert picked == translate_batch(run.model, run.tokenizer, sources, max_new_tokens=5)
    with pytest.raises(SystemExit) as exit_info:  # --best-of without --reward: argparse's one line, exit 2
        main([str(sft_run[0]), "--best-of", "4"])
    assert exit_info.value.code == 2
