"""Preference pairs for DPO and reward models: `{"prompt", "chosen", "rejected"}` per JSONL line (TRL's format).

The prompt is a string (plain text, continued directly) or a list of chat messages (rendered with
the ChatML template, ending in an open assistant turn); "chosen" and "rejected" are strings or a
list holding one assistant message. A pair is encoded as two sequences, prompt + chosen and
prompt + rejected, each with weight 1 on its completion tokens (and, in a chat, the closing
<|im_end|>), 0 on the prompt. The held-out split is the file's own where every line has
"split": "train" | "val" (as lmlab.data.make_preferences writes), else chosen by a hash of the
prompt, so pairs that share a prompt stay together.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from lmlab.chat import END, chat_format
from lmlab.data.bitext import split_of
from lmlab.data.conversations import check_messages
from lmlab.data.jsonl import read_objects

HELD_OUT_PERCENT = 10


@dataclass(frozen=True)
class Pair:
    prompt: str | tuple[dict, ...]
    chosen: str
    rejected: str
    split: str | None = None  # "train" or "val" when the file says (lmlab.data.make_preferences)


def _completion(value, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise ValueError(f"{where}: \"{key}\" must be a string or a list of one assistant message")


def read_pairs(path: str | pathlib.Path) -> list[Pair]:
    pairs = []
    for line_no, record in read_objects(path):
        where = f"{path}:{line_no}"
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in record]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)} (a preference pair has "
                             "\"prompt\", \"chosen\" and \"rejected\")")
        prompt = record["prompt"]
        if isinstance(prompt, list):
            prompt = check_messages(prompt + [{"role": "assistant", "content": ""}], where)[:-1]
        elif not isinstance(prompt, str):
            raise ValueError(f"{where}: \"prompt\" must be a string or a list of messages")
        split = record.get("split")
        if split not in (None, "train", "val"):
            raise ValueError(f"{where}: \"split\" must be \"train\" or \"val\"; got {split!r}")
        pairs.append(Pair(prompt, _completion(record["chosen"], where, "chosen"),
                          _completion(record["rejected"], where, "rejected"), split))
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


def split_pairs(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): as the file's "split" keys say, else by a hash of the prompt; a tiny file
    keeps its last pair out."""
    if all(p.split is not None for p in pairs) and {p.split for p in pairs} == {"train", "val"}:
        return [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "val"]
    def held_out(pair):
        return split_of(json.dumps(pair.prompt, sort_keys=True), test_percent=0, dev_percent=HELD_OUT_PERCENT) == "dev"

    train = [p for p in pairs if not held_out(p)]
    val = [p for p in pairs if held_out(p)]
    if not train or not val:
        return pairs[:-1] or pairs, pairs[-1:]
    return train, val


def encode_completion(tokenizer, prompt, completion: str) -> tuple[list[int], list[int]]:
    """(ids, weights) of prompt + completion; weight 1 on the completion's tokens (and <|im_end|>
    after it in a chat), 0 on the prompt."""
    if isinstance(prompt, str):
        head = tokenizer.encode(prompt)
        body = tokenizer.encode(completion) + [tokenizer.eos_id]
    else:
        head = tokenizer.encode(chat_format(tokenizer).render(list(prompt), add_generation_prompt=True))
        body = tokenizer.encode(completion) + [tokenizer.special_ids[END]]
    return head + body, [0] * len(head) + [1] * len(body)
