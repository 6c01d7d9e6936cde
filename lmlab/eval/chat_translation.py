"""BLEU and chrF of a chat model's greedy translations of held-out sentences.

    python -m lmlab.eval.chat_translation RUN [--corpus ui_en_fr] [--split test] [--limit N]
        [--batch-size 16] [--max-new-tokens 64] [--best-of N --reward RM_RUN [--temperature 0.7]]

Each source sentence is asked as "Translate to French: <source>" (lmlab.data.conversations, the
format task sft trains on) in the ChatML template of the run's tokenizer; the reply is decoded
greedily with the KV cache, several prompts at a time (left-padded, lmlab.decode.sampling), cut at
<|im_end|>, and scored against the reference with sacrebleu's corpus BLEU and chrF. Prints one
JSON object: {"bleu", "chrf", "pairs", "split", "corpus", "step"}.

`--best-of N --reward RM_RUN`: instead of the greedy reply, N replies are sampled at
--temperature and the one the reward model (a task=reward run) scores highest is scored
(lmlab.decode.best_of), as in the best-of-N rows of RLHF papers.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np
import sacrebleu

from lmlab.chat import END, chat_format
from lmlab.data.bitext import get_parallel_corpus
from lmlab.data.conversations import translation_conversation
from lmlab.config import ConfigError
from lmlab.decode.best_of import best_of_n_batch
from lmlab.decode.sampling import generate, left_pad
from lmlab.runs import load_reward_run, load_run


def _prompts(tokenizer, sources: list[str]) -> list[list[int]]:
    chat = chat_format(tokenizer)
    return [tokenizer.encode(chat.render(list(translation_conversation(s, "")[:1]), add_generation_prompt=True))
            for s in sources]


def best_of_batch(model, reward_model, tokenizer, sources: list[str], *, n: int, max_new_tokens: int,
                  temperature: float, key: jax.Array) -> list[str]:
    """For each source, the reply of n sampled ones that the reward model scores highest."""
    end_id = tokenizer.special_ids.get(END, tokenizer.eos_id)
    ranked = best_of_n_batch(model, reward_model, _prompts(tokenizer, sources), n=n, max_new_tokens=max_new_tokens,
                             key=key, stop_id=end_id, temperature=temperature)
    return [tokenizer.decode([t for t in candidates[0][1] if t != tokenizer.eos_id]).strip() for candidates in ranked]


def translate_batch(model, tokenizer, sources: list[str], *, max_new_tokens: int) -> list[str]:
    """Greedy replies to "Translate to French: ..." for a batch of sources."""
    padded_BT, lengths = left_pad(_prompts(tokenizer, sources))
    end_id = tokenizer.special_ids.get(END, tokenizer.eos_id)
    out = np.asarray(generate(model, padded_BT, max_new_tokens=max_new_tokens, key=jax.random.key(0), temperature=0.0,
                              eos_id=end_id, prompt_lengths_B=lengths))[:, padded_BT.shape[1]:]
    replies = []
    for row in out.tolist():
        row = row[:row.index(end_id)] if end_id in row else row
        replies.append(tokenizer.decode([t for t in row if t != tokenizer.eos_id]).strip())
    return replies


def evaluate(run, pairs, *, batch_size: int, max_new_tokens: int, reward=None, best_of: int = 1,
             temperature: float = 0.7) -> dict:
    """Greedy replies, or (reward: a loaded reward run) the best of `best_of` samples; batch_size
    counts prompts, so a best-of batch decodes batch_size x best_of rows."""
    hypotheses = []
    for start in range(0, len(pairs), batch_size):
        sources = [s for s, _ in pairs[start:start + batch_size]]
        if reward is None:
            hypotheses += translate_batch(run.model, run.tokenizer, sources, max_new_tokens=max_new_tokens)
        else:
            hypotheses += best_of_batch(run.model, reward.model, run.tokenizer, sources, n=best_of,
                                        max_new_tokens=max_new_tokens, temperature=temperature,
                                        key=jax.random.fold_in(jax.random.key(0), start))
    references = [[t for _, t in pairs]]
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, references).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, references).score, "pairs": len(pairs),
            "examples": [{"source": s, "reference": t, "reply": h} for (s, t), h in list(zip(pairs, hypotheses))[:3]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.eval.chat_translation", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--corpus", default="ui_en_fr", help="a parallel corpus (lmlab.data.bitext)")
    parser.add_argument("--split", default="test", choices=("test", "dev"))
    parser.add_argument("--limit", type=int, default=0, help="the first N pairs of the split (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--best-of", type=int, default=0, help="score the best of N sampled replies (needs --reward)")
    parser.add_argument("--reward", help="the reward model (a task=reward run) that picks the best of N")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of --best-of")
    args = parser.parse_args(argv)
    if args.limit < 0 or args.batch_size < 1 or args.max_new_tokens < 1 or args.best_of < 0:
        parser.error("need --limit >= 0, --batch-size >= 1, --max-new-tokens >= 1 and --best-of >= 0")
    if bool(args.best_of) != bool(args.reward) or args.temperature <= 0:
        parser.error("--best-of N and --reward RM_RUN go together, with --temperature > 0")
    run = load_run(args.run_dir)
    try:
        reward = load_reward_run(args.reward, args.run_dir) if args.reward else None
    except ConfigError as e:
        parser.error(f"--reward {e}")
    pairs = list(getattr(get_parallel_corpus(args.corpus), args.split))
    pairs = pairs[:args.limit] if args.limit else pairs
    result = evaluate(run, pairs, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, reward=reward,
                      best_of=args.best_of, temperature=args.temperature)
    extra = {"best_of": args.best_of, "reward": args.reward, "temperature": args.temperature} if reward else {}
    print(json.dumps({**result, **extra, "split": args.split, "corpus": args.corpus, "step": run.step},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
