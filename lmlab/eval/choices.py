"""Multiple-choice evaluation by log-likelihood, as lm-evaluation-harness scores MMLU-style tasks.

Each line of a JSONL file is {"question": str, "choices": [str, ...], "answer": i}. Every choice is
scored by the summed log-probability of " " + choice after the question (lm-eval's default target
delimiter, and its way of splitting context from continuation: trailing whitespace of the question
moves to the continuation, and the continuation's ids are the whole text's ids after the question's).

  acc       the highest log-likelihood picks the answer;
  acc_norm  the highest log-likelihood per UTF-8 byte of the choice (lm-eval divides by the
            choice's length, which is the same for ASCII), which stops short choices winning just
            for being short.

The question runs once through the model, filling a KV cache; all choices then run as one batch
on copies of that cache. Shapes are rounded up to powers of two so that a file compiles a few
programs, not one per question.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmlab.data.jsonl import read_objects

TARGET_DELIMITER = " "


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    choices: tuple[str, ...]
    answer: int
    line: int  # 1-based line in the file, for error messages


def read_choices(path: str | pathlib.Path) -> list[Question]:
    """The questions of a JSONL file; a malformed line is a one-line ValueError naming the line."""
    questions = [_parse(item, f"{path}:{number}", number) for number, item in read_objects(path)]
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _parse(item: dict, where: str, number: int) -> Question:
    question, choices, answer = item.get("question"), item.get("choices"), item.get("answer")
    if not isinstance(question, str):
        raise ValueError(f"{where}: 'question' should be a string, got {question!r}")
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"{where}: 'choices' should be a list of non-empty strings")
    if len(choices) < 2:
        raise ValueError(f"{where}: needs at least two choices, got {len(choices)}")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(f"{where}: answer {answer!r} is not an index into its {len(choices)} choices")
    return Question(question, tuple(choices), answer, number)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing whitespace of `context` joins the continuation, whose ids are those
    of the whole text after the context's own."""
    stripped = context.rstrip()
    continuation, context = context[len(stripped):] + continuation, stripped
    context_ids = tokenizer.encode(context)
    return context_ids, tokenizer.encode(context + continuation)[len(context_ids):]


def metrics(loglikelihoods: list[np.ndarray], questions: list[Question]) -> dict:
    """acc, acc_norm (log-likelihood per byte of the choice) and count; ties go to the first choice."""
    correct = correct_norm = 0
    for lls, q in zip(loglikelihoods, questions):
        n_bytes = np.array([len(c.encode("utf-8")) for c in q.choices], np.float64)
        correct += int(np.argmax(lls)) == q.answer
        correct_norm += int(np.argmax(np.asarray(lls) / n_bytes)) == q.answer
    n = len(questions)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "count": n,
            "chance": float(np.mean([1 / len(q.choices) for q in questions]))}


def continuation_logprobs(last_logits_V, logits_CSV, cont_CS):
    """Log-probability of each continuation token [C, S]: the first from the question's last
    position, token j > 0 from the continuation's position j - 1."""
    first_C = jax.nn.log_softmax(last_logits_V)[cont_CS[:, 0]]
    rest_CS = jnp.take_along_axis(jax.nn.log_softmax(logits_CSV[:, :-1], axis=-1), cont_CS[:, 1:, None], -1)[..., 0]
    return jnp.concatenate([first_C[:, None], rest_CS], axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len"))
def _choice_logprobs(graphdef, state, context_1T, context_len, cont_CS, *, cache_len):
    """The question once (into a KV cache), then every choice in one batch on copies of the cache."""
    model = nnx.merge(graphdef, state)
    logits_1TV, cache = model(context_1T, cache=model.init_cache(1, cache_len), cache_index=0)
    C = cont_CS.shape[0]
    cache_C = jax.tree.map(lambda x: jnp.broadcast_to(x, (C, *x.shape[1:])), cache)
    logits_CSV, _ = model(cont_CS, cache=cache_C, cache_index=context_len)
    return continuation_logprobs(logits_1TV[0, context_len - 1], logits_CSV, cont_CS)


def _bucket(n: int) -> int:
    return max(8, 1 << (n - 1).bit_length())


def fit_context(context: list[int], longest_choice: int, max_len: int) -> list[int]:
    """The end of `context` that leaves room for the longest choice (lm-eval cuts from the left)."""
    if longest_choice >= max_len:
        raise ValueError(f"a choice of {longest_choice} tokens leaves no room for the question in {max_len} positions")
    return context[-(max_len - longest_choice):]


def score_question(graphdef, state, context: list[int], continuations: list[list[int]], max_len: int,
                   n_rows: int) -> np.ndarray:
    """Summed log-likelihood of each continuation after `context` (left-truncated to fit `max_len`)."""
    S = max(len(c) for c in continuations)
    context = fit_context(context, S, max_len)
    T = len(context)
    T_pad = min(_bucket(T), max_len)
    S_pad = _bucket(S) if T + _bucket(S) <= max_len else S  # padding must stay inside the cache
    context_1T = np.zeros((1, T_pad), np.int32)
    context_1T[0, :T] = context
    cont_CS, mask_CS = np.zeros((n_rows, S_pad), np.int32), np.zeros((n_rows, S_pad), bool)
    for i, ids in enumerate(continuations):
        cont_CS[i, :len(ids)], mask_CS[i, :len(ids)] = ids, True
    cache_len = min(T_pad + S_pad, max_len)  # holds T + S_pad: both paddings are chosen to fit
    logprobs_CS = _choice_logprobs(graphdef, state, context_1T, T, cont_CS, cache_len=cache_len)
    return np.where(mask_CS, np.asarray(logprobs_CS, np.float64), 0.0).sum(axis=1)[:len(continuations)]


def evaluate_choices(model: nnx.Module, tokenizer, questions: list[Question], max_len: int) -> dict:
    """Score every question's choices with `model` (a decoder with a KV cache); lm-eval's metrics."""
    graphdef, state = nnx.split(model)
    n_rows = max(len(q.choices) for q in questions)  # one compiled batch size for the whole file
    loglikelihoods = []
    for q in questions:
        pairs = [encode_pair(tokenizer, q.text, TARGET_DELIMITER + c) for c in q.choices]
        context = pairs[0][0] or [tokenizer.eos_id]  # lm-eval: an empty question becomes end-of-text
        continuations = [cont for _, cont in pairs]
        if any(not cont for cont in continuations):
            raise ValueError(f"question on line {q.line}: a choice encodes to no tokens")
        if max(len(c) for c in continuations) >= max_len:
            raise ValueError(f"question on line {q.line}: a choice is longer than the model's {max_len} positions")
        loglikelihoods.append(score_question(graphdef, state, context, continuations, max_len, n_rows))
    return metrics(loglikelihoods, questions)
