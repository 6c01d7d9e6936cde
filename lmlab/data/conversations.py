"""Conversations for supervised fine-tuning: `{"messages": [{"role", "content"}, ...]}` per JSONL line.

A conversation set has a training and a held-out split. `data.corpus` names one:

  * a path to a `.jsonl` or `.jsonl.gz` file of conversations (the chat format of HF datasets and
    TRL); the held-out split is every conversation whose first message hashes into 5% of buckets
    (lmlab.data.bitext.split_of), so it does not depend on the file's order;
  * `translate_en_fr`: the en->fr gettext pairs (lmlab.data.po_catalogs, `ui_en_fr`) as
    "Translate to French: ..." conversations, training pairs only; the dev pairs are held out and
    the test pairs stay unseen (the evaluation of lmlab.eval.chat_translation);
  * `translate_en_fr_tiny`: the same from the small JupyterLab catalog (tests, smoke runs);
  * `chatterbot`: the English dialogues of PyPI `chatterbot-corpus` (lmlab.data.chatterbot), the
    first turn the user's, then alternating (a last question without a reply is dropped);
    `chatterbot:LANGUAGE` (e.g. `chatterbot:chinese`) another language's. Held out as for files.

Every problem with a line is one ValueError naming the file and line.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from lmlab.data import chatterbot
from lmlab.data.bitext import get_parallel_corpus, split_of
from lmlab.data.jsonl import read_objects

ROLES = ("system", "user", "assistant")
TRANSLATE_PROMPT = "Translate to French: "
HELD_OUT_PERCENT = 5

Conversation = tuple[dict, ...]


@dataclass(frozen=True)
class ConversationSet:
    name: str
    train: tuple[Conversation, ...]
    val: tuple[Conversation, ...]


def check_messages(messages, where: str) -> Conversation:
    """The messages of one conversation, validated; `where` names it in the error ("file:line")."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{where}: message {i} is not an object")
        if message.get("role") not in ROLES:
            raise ValueError(f"{where}: message {i} has role {message.get('role')!r}; roles are {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: message {i} ({message['role']}) has no string \"content\"")
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError(f"{where}: the conversation has no assistant turn, so nothing to learn from")
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def read_conversations(path: str | pathlib.Path) -> list[Conversation]:
    conversations = []
    for line_no, record in read_objects(path):
        if "messages" not in record:
            raise ValueError(f"{path}:{line_no}: no \"messages\" key")
        conversations.append(check_messages(record["messages"], f"{path}:{line_no}"))
    if not conversations:
        raise ValueError(f"{path}: no conversations")
    return conversations


def _held_out(conversation: Conversation) -> bool:
    return split_of(json.dumps(conversation[0], sort_keys=True), test_percent=0,
                    dev_percent=HELD_OUT_PERCENT) == "dev"


def translation_conversation(source: str, target: str) -> Conversation:
    return ({"role": "user", "content": TRANSLATE_PROMPT + source}, {"role": "assistant", "content": target})


def _translation_set(name: str, corpus_name: str) -> ConversationSet:
    corpus = get_parallel_corpus(corpus_name)
    return ConversationSet(name, tuple(translation_conversation(s, t) for s, t in corpus.train),
                           tuple(translation_conversation(s, t) for s, t in corpus.dev))


def alternating_conversation(turns) -> Conversation:
    """User, assistant, user, ... messages from plain turns; a last user turn without a reply
    teaches nothing (the loss is on replies) and is dropped."""
    turns = turns[: len(turns) - len(turns) % 2]
    return tuple({"role": ("user", "assistant")[i % 2], "content": turn} for i, turn in enumerate(turns))


def held_out_split(name: str, conversations) -> ConversationSet:
    """5% of the conversations, by a hash of their first message, held out (at least one)."""
    train = tuple(c for c in conversations if not _held_out(c))
    val = tuple(c for c in conversations if _held_out(c))
    if not train or not val:  # tiny sets: keep one conversation out rather than none
        train, val = tuple(conversations[:-1]) or tuple(conversations), tuple(conversations[-1:])
    return ConversationSet(name, train, val)


BUILTIN = {"translate_en_fr": "ui_en_fr", "translate_en_fr_tiny": "jupyterlab_en_fr_tiny"}


def get_conversations(name_or_path: str) -> ConversationSet:
    if name_or_path in BUILTIN:
        return _translation_set(name_or_path, BUILTIN[name_or_path])
    if chatterbot.is_chatterbot(name_or_path):
        turns = chatterbot.load_conversations(name_or_path)
        return held_out_split(name_or_path, [alternating_conversation(t) for t in turns])
    path = pathlib.Path(name_or_path)
    if not name_or_path.endswith((".jsonl", ".jsonl.gz")):
        raise ValueError(f"data.corpus={name_or_path!r} for task sft must be a .jsonl / .jsonl.gz file of "
                         f"{{\"messages\": [...]}} lines or one of {', '.join(BUILTIN)}, "
                         f"{chatterbot.NAME}, {chatterbot.NAME}:LANGUAGE")
    return held_out_split(str(path), read_conversations(path))
