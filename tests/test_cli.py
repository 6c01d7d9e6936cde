"""The command line as a user types it: subprocesses of `python -m lmlab.cli` on tiny run
directories (randomly initialised, not trained; tests/tiny_runs.py)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from lmlab import predict
from lmlab.runs import load_run
from tests.tiny_runs import BERT, CLASSIFIER, GPT, write_tiny_run

REPO = pathlib.Path(__file__).resolve().parent.parent


def lmlab(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lmlab.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: write_tiny_run(root / name, kind) for name, kind in
            (("gpt", GPT), ("bert", BERT), ("classifier", CLASSIFIER))}


def test_sample_prompt_escapes_as_typed_in_bash(runs):
    """`--prompt "ROMEO:\\n"` in bash passes a backslash and an n: it means a newline."""
    proc = lmlab("sample", runs["gpt"], "--prompt", r"ROMEO:\n\tx\\n", "--max-new-tokens", 3, "--temperature", 0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:\n\tx\\n") and len(proc.stdout) > len("ROMEO:\n\tx\\n") + 1
    raw = lmlab("sample", runs["gpt"], "--prompt", r"ROMEO:\n", "--raw-prompt", "--max-new-tokens", 3,
                "--temperature", 0)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.startswith("ROMEO:\\n")


def test_fill_mask_prints_the_top_k_tokens_and_probabilities(runs):
    proc = lmlab("sample", runs["bert"], "--fill", "To b[MASK], or not", "--top-k", 3)
    assert proc.returncode == 0, proc.stderr
    run = load_run(runs["bert"])
    (expected,) = predict.fill_mask(run.model, run.tokenizer, "To b[MASK], or not", top_k=3)
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [float(p) for p, _, _ in lines] == pytest.approx([c.prob for c in expected], abs=6e-5)
    assert [text for _, _, text in lines] == [c.text for c in expected]
    assert "step 0" in proc.stderr  # an untrained model's predictions come with a warning


def test_classifier_run_classifies_the_prompt(runs):
    passage = "But soft, what light"
    proc = lmlab("sample", runs["classifier"], "--prompt", passage)
    assert proc.returncode == 0, proc.stderr
    run = load_run(runs["classifier"])
    probs = predict.classify(run.model, run.tokenizer, passage, run.config.data.seq_len)
    expected = sorted(zip(probs, ["hamlet", "the-tempest"]), reverse=True)
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [name for _, name in lines] == [name for _, name in expected]
    assert [float(p) for p, _ in lines] == pytest.approx([p for p, _ in expected], abs=6e-5)


def test_argument_errors_name_the_command(runs):
    proc = lmlab("sample", runs["bert"], "--prompt", "x")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        f"lmlab sample: error: {runs['bert']} is a masked-LM (bert) run: it fills in masks, "
        "e.g. --fill \"To be or not to [MASK]\" (see 'lmlab sample -h')")


def test_eval_max_batches_progress_and_heldout_split_only(runs, tmp_path):
    import jax
    import numpy as np
    from flax import nnx

    from lmlab.data.token_file import read_token_file
    from lmlab.eval.lm import eval_windows

    proc = lmlab("eval", runs["gpt"], "--max-batches", 2, "--batch-size", 3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["max_batches"] == 2 and result["step"] == 0
    assert "eval: 100%" in proc.stderr and "2/2" in proc.stderr  # the progress bar
    assert (runs["gpt"] / "data" / "val.bin").exists() and not (runs["gpt"] / "data" / "train.bin").exists()
    # The same 6 evenly spaced windows, scored by a plain forward pass.
    run = load_run(runs["gpt"])
    windows, weights = eval_windows(read_token_file(runs["gpt"] / "data" / "val.bin"), 16, 6)
    graphdef, state = nnx.split(run.model)
    logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[0])(state, windows[:, :-1])
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    nll = -np.take_along_axis(logp, windows[:, 1:, None], -1)[..., 0]
    assert len(windows) == 2 * 3 and result["val_tokens"] == weights.sum()  # the last window is partial
    assert result["val_loss"] == pytest.approx(float((nll * weights).sum() / weights.sum()), rel=1e-5)


def test_embed_json_has_the_keys_its_help_names(runs):
    import re

    help_text = " ".join(lmlab("embed", "-h").stdout.split())
    described = re.search(r"--json print (\{.*?\}) as JSON, with --word also \"word\": (\{.*?\})", help_text)
    assert described, help_text
    top, word = (set(re.findall(r'"(\w+)"', group)) for group in described.groups())
    proc = lmlab("embed", runs["bert"], "--text", "To be, or not", "--text", "to be", "--word", "be", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == top | {"word"} and set(result["word"]) == word
    assert len(result["word"]["occurrences"]) == 2
    plain = lmlab("embed", runs["bert"], "--text", "To be, or not", "--text", "to be", "--json")
    assert set(json.loads(plain.stdout)) == top


def test_samples_after_training_fit_learned_positions(tmp_path, capsys):
    """sample.max_new_tokens (100 by default) beyond a learned table of 32 is cut to fit, not an error
    that turns a finished run's exit status into 1."""
    from lmlab import cli
    from tests.test_prepare_run import TINY

    run = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("--config.sample.prompts")]
    assert cli.main(["train", "configs/gpt_shakespeare.py", *args, "--config.data.corpus=shakespeare_tiny",
                     "--config.model.positions=learned", "--config.model.max_len=32", "--workdir", str(run),
                     "--no-progress"]) == 0
    sample = (run / "samples.txt").read_text()
    assert sample.startswith("ROMEO:\n") and len(sample) > len("ROMEO:\n")
