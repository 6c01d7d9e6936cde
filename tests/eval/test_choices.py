"""Multiple-choice scoring: answers forced by the logits, acc_norm vs acc, the cached prefix equals a
plain forward, bad lines name their line, and the CLI prints one JSON object."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import cli
from lmlab import config as config_lib
from lmlab.eval import choices
from lmlab.eval.choices import Question
from lmlab.interop import rundir
from lmlab.models import build_model
from lmlab.tokenizers import CharTokenizer


class Bigram(nnx.Module):
    """logits at a position = table[token there]; the KV cache is carried but unused."""

    def __init__(self, table_VV):
        self.table = nnx.Param(jnp.asarray(table_VV, jnp.float32))

    def __call__(self, tokens_BT, *, cache=None, cache_index=0):
        return self.table[...][tokens_BT], cache

    def init_cache(self, batch, max_len, dtype=None):
        return [{"k": jnp.zeros((batch, max_len, 1, 1))}]


TOKENIZER = CharTokenizer(sorted("abcdxyz ?"))
ID = {c: TOKENIZER.encode(c)[0] for c in "abcdxyz ?"}


def bigram_forcing(pairs: dict[str, str], strength: float = 8.0) -> Bigram:
    """A model for which `pairs[c]` follows character c with logit `strength` (0 for the rest)."""
    table = np.zeros((TOKENIZER.vocab_size, TOKENIZER.vocab_size))
    for prev, nxt in pairs.items():
        table[ID[prev], ID[nxt]] = strength
    return Bigram(table)


def log_softmax_row(model, prev: str) -> np.ndarray:
    return np.asarray(jax.nn.log_softmax(model.table[...][ID[prev]]), np.float64)


def test_answer_forced_by_the_logits_and_loglikelihoods_by_hand():
    model = bigram_forcing({"?": " ", " ": "y", "y": "z"})  # after "?": " y" then "z" is the likely text
    questions = [Question("x?", ("yz", "ab", "yd"), 0, 1), Question("ab?", ("c", "yz"), 1, 2)]
    graphdef, state = nnx.split(model)
    context, _ = choices.encode_pair(TOKENIZER, "x?", " yz")
    lls = choices.score_question(graphdef, state, context, [TOKENIZER.encode(" " + c) for c in questions[0].choices],
                                 max_len=64, n_rows=3)
    by_hand = [log_softmax_row(model, "?")[ID[" "]] + log_softmax_row(model, " ")[ID[a]] + log_softmax_row(model, a)[ID[b]]
               for a, b in ("yz", "ab", "yd")]
    np.testing.assert_allclose(lls, by_hand, rtol=1e-5)
    assert choices.evaluate_choices(model, TOKENIZER, questions, max_len=64) == {
        "acc": 1.0, "acc_norm": 1.0, "count": 2, "chance": (1 / 3 + 1 / 2) / 2}
    wrong = [Question(q.text, q.choices, (q.answer + 1) % len(q.choices), q.line) for q in questions]
    assert choices.evaluate_choices(model, TOKENIZER, wrong, max_len=64)["acc"] == 0.0


def test_a_context_too_long_for_the_model_is_cut_from_the_left():
    assert choices.fit_context(list(range(60)), 9, 40) == list(range(29, 60))  # 31 + 9 = 40 positions
    assert choices.fit_context([1, 2], 9, 40) == [1, 2]
    with pytest.raises(ValueError, match="a choice of 40 tokens leaves no room"):
        choices.fit_context([1, 2], 40, 40)


def test_acc_norm_differs_from_acc_where_lengths_differ():
    q = Question("q", ("a", "abcd"), 1, 1)
    result = choices.metrics([np.array([-2.0, -4.0])], [q])  # per byte: -2 vs -1
    assert (result["acc"], result["acc_norm"]) == (0.0, 1.0)
    # bytes, not characters: "é" is 2 bytes, so -3 over 2 bytes (-1.5) beats -2 over 1 byte
    assert choices.metrics([np.array([-2.0, -3.0])], [Question("q", ("a", "é"), 1, 1)])["acc_norm"] == 1.0


def test_trailing_whitespace_of_the_question_moves_to_the_continuation():
    context, cont = choices.encode_pair(TOKENIZER, "ab? ", " c")
    assert TOKENIZER.decode(context) == "ab?" and TOKENIZER.decode(cont) == "  c"
    context, cont = choices.encode_pair(TOKENIZER, "ab?\n", " c")  # any whitespace, as lm-eval's rstrip()
    assert TOKENIZER.decode(context) == "ab?" and cont == TOKENIZER.encode("\n c")


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "answer 2 is not an index into its 2 choices"),
    ('{"question": "q", "choices": ["a", "b"], "answer": -1}', "answer -1 is not an index"),
    ('{"question": "q", "choices": ["a", "b"], "answer": true}', "answer True is not an index"),
    ('{"question": "q", "choices": ["a"], "answer": 0}', "needs at least two choices, got 1"),
    ('{"question": "q", "choices": ["a", ""], "answer": 0}', "'choices' should be a list of non-empty strings"),
    ('{"question": 3, "choices": ["a", "b"], "answer": 0}', "'question' should be a string, got 3"),
    ('["q", ["a", "b"], 0]', "expected a JSON object, got list"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 0', "not valid JSON"),
])
def test_bad_lines_are_one_line_errors_naming_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine", "choices": ["a", "b"], "answer": 0}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: {message}") as info:
        choices.read_choices(path)
    assert "\n" not in str(info.value)


def _tiny_gpt_config(positions: str):
    return config_lib.load("configs/base.py", [
        "--config.model.n_layers=2", "--config.model.d_model=32", "--config.model.n_heads=4",
        "--config.model.n_kv_heads=2", "--config.model.d_ff=64", f"--config.model.positions={positions}",
        "--config.model.max_len=40", "--config.data.seq_len=40", "--config.tokenizer.kind=char"])


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_cached_prefix_equals_a_plain_forward(positions):
    config = _tiny_gpt_config(positions)
    model = build_model(config.model, TOKENIZER.vocab_size, seed=1)
    rng = np.random.default_rng(0)
    context = rng.integers(3, TOKENIZER.vocab_size, 13).tolist()  # 13 -> padded to 16
    conts = [rng.integers(3, TOKENIZER.vocab_size, n).tolist() for n in (1, 5, 9)]  # padded to 16
    graphdef, state = nnx.split(model)
    lls = choices.score_question(graphdef, state, context, conts, max_len=40, n_rows=4)
    rows = np.zeros((3, len(context) + 9), np.int32)  # right padding: causal, so it changes nothing before it
    for i, cont in enumerate(conts):
        rows[i, :len(context) + len(cont)] = context + cont
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0])
    logprobs = np.asarray(jax.nn.log_softmax(forward(state, rows), axis=-1))
    for i, (ll, cont) in enumerate(zip(lls, conts)):
        reference = sum(float(logprobs[i, len(context) - 1 + j, t]) for j, t in enumerate(cont))
        assert ll == pytest.approx(reference, abs=1e-4)



def test_cli_eval_choices(tmp_path, capsys):
    config = _tiny_gpt_config("rope")
    model = build_model(config.model, TOKENIZER.vocab_size, seed=0)
    run = rundir.write_run(tmp_path / "run", config, TOKENIZER, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"ab{c}?", "choices": ["yz", "d", "x"], "answer": i % 3})
                              for i, c in enumerate("abcd")) + "\n")
    assert cli.main(["eval", str(run), "--choices", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 0 and result["count"] == 4 and result["chance"] == pytest.approx(1 / 3)
    assert {"acc", "acc_norm"} <= set(result)
    path.write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    assert cli.main(["eval", str(run), "--choices", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"lmlab: error: {path}:1: needs at least two choices, got 1"
