"""Build a preference set from a chat model's own replies, scored against reference answers.

    python -m lmlab.data.make_preferences RUN --out pairs.jsonl [--corpus translate_en_fr] [--k 4]
        [--limit N] [--temperature 1.0] [--max-new-tokens 64] [--seed 0]

For every conversation of the set (lmlab.data.conversations: the first user turn is the prompt,
the first assistant turn the reference), K replies are sampled from RUN (usually the SFT model),
each is scored by chrF against the reference (sacrebleu), and the best becomes "chosen", the worst
"rejected"; a prompt whose replies all score the same is dropped. The training conversations give
the training pairs and the held-out ones the held-out pairs, written with "split" so that the dpo
and reward tasks keep them apart (the test pairs of translate_en_fr are never used).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

import jax
import numpy as np
from sacrebleu.metrics import CHRF

from lmlab.chat import END, chat_format
from lmlab.data.conversations import get_conversations
from lmlab.decode.sampling import generate, left_pad
from lmlab.files import atomic_write
from lmlab.runs import load_run

log = logging.getLogger("lmlab")


def sample_replies(model, tokenizer, messages, *, k: int, max_new_tokens: int, temperature: float,
                   key: jax.Array) -> list[str]:
    """K replies to a conversation, each cut at <|im_end|>."""
    prompt = tokenizer.encode(chat_format(tokenizer).render(list(messages), add_generation_prompt=True))
    end_id = tokenizer.special_ids.get(END, tokenizer.eos_id)
    padded_BT, lengths = left_pad([prompt] * k)
    out = np.asarray(generate(model, padded_BT, max_new_tokens=max_new_tokens, key=key, temperature=temperature,
                              eos_id=end_id, prompt_lengths_B=lengths))[:, padded_BT.shape[1]:]
    replies = []
    for row in out.tolist():
        row = row[:row.index(end_id)] if end_id in row else row
        replies.append(tokenizer.decode([t for t in row if t != tokenizer.eos_id]))
    return replies


def best_and_worst(replies: list[str], reference: str) -> tuple[str, str, float, float] | None:
    """(chosen, rejected, their chrF) or None when every reply scores the same."""
    chrf = CHRF()
    scores = [chrf.sentence_score(reply, [reference]).score for reply in replies]
    best, worst = int(np.argmax(scores)), int(np.argmin(scores))
    if scores[best] == scores[worst]:
        return None
    return replies[best], replies[worst], scores[best], scores[worst]


def build(run, corpus: str, *, k: int, limit: int, max_new_tokens: int, temperature: float, seed: int) -> list[dict]:
    conversations = get_conversations(corpus)
    records = []
    for split, items in (("train", conversations.train), ("val", conversations.val)):
        items = items[:limit] if limit else items
        kept = 0
        for i, conversation in enumerate(items):
            turn = next(j for j, m in enumerate(conversation) if m["role"] == "assistant")
            prompt, reference = conversation[:turn], conversation[turn]["content"]
            replies = sample_replies(run.model, run.tokenizer, prompt, k=k, max_new_tokens=max_new_tokens,
                                     temperature=temperature, key=jax.random.fold_in(jax.random.key(seed), len(records) + i))
            picked = best_and_worst(replies, reference)
            if picked is None:
                continue
            chosen, rejected, chrf_chosen, chrf_rejected = picked
            records.append({"prompt": list(prompt), "chosen": chosen, "rejected": rejected, "split": split,
                            "chrf_chosen": round(chrf_chosen, 2), "chrf_rejected": round(chrf_rejected, 2)})
            kept += 1
        log.info("%s: %d of %d prompts kept (the others' %d replies all scored the same)", split, kept, len(items), k)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.data.make_preferences", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--corpus", default="translate_en_fr")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="conversations per split (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.k < 2 or args.temperature <= 0:
        parser.error("need --k >= 2 and --temperature > 0 (replies must differ to be ranked)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    records = build(load_run(args.run_dir), args.corpus, k=args.k, limit=args.limit,
                    max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    with atomic_write(pathlib.Path(args.out), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    print(json.dumps({"out": args.out, "pairs": len(records),
                      "held_out": sum(r["split"] == "val" for r in records)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
