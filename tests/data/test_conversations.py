"""Conversation files for SFT (lmlab.data.conversations): what is accepted, what is refused in one
line naming the file and line, the deterministic held-out split, the built-in translation set."""

import gzip
import json

import pytest

from lmlab.data.conversations import TRANSLATE_PROMPT, get_conversations, read_conversations


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def chat(user, reply):
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})


def test_reads_messages_and_gzip(tmp_path):
    lines = [chat(f"q{i}", f"a{i}") for i in range(3)] + [""]
    plain = read_conversations(write(tmp_path / "c.jsonl", lines))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write("\n".join(lines))
    assert read_conversations(tmp_path / "c.jsonl.gz") == plain
    assert plain[1] == ({"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"})


@pytest.mark.parametrize("line, words", [
    ("[1, 2]", "c.jsonl:2: expected a JSON object, got list"),
    ("{\"messages\": [", "c.jsonl:2: not valid JSON"),
    ("{\"text\": \"hi\"}", "c.jsonl:2: no \"messages\" key"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "c.jsonl:2: message 0 has role 'robot'"),
    (json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "c.jsonl:2: the conversation has no assistant turn"),
    (json.dumps({"messages": [{"role": "assistant", "content": 3}]}), "c.jsonl:2: message 0 (assistant) has no string"),
    (json.dumps({"messages": []}), "c.jsonl:2: \"messages\" must be a non-empty list"),
])
def test_bad_lines_are_one_line_errors_naming_the_line(tmp_path, line, words):
    path = write(tmp_path / "c.jsonl", [chat("q", "a"), line])
    with pytest.raises(ValueError) as info:
        read_conversations(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_held_out_split_is_by_conversation_and_independent_of_order(tmp_path):
    lines = [chat(f"question {i}", f"answer {i}") for i in range(400)]
    forward = get_conversations(str(write(tmp_path / "a.jsonl", lines)))
    backward = get_conversations(str(write(tmp_path / "b.jsonl", lines[::-1])))
    key = lambda conversations: {json.dumps(c) for c in conversations}  # noqa: E731
    assert key(forward.val) == key(backward.val) and 5 <= len(forward.val) <= 40
    assert not key(forward.val) & key(forward.train) and len(forward.train) + len(forward.val) == 400


def test_unknown_name_or_extension_is_refused():
    with pytest.raises(ValueError, match="must be a .jsonl"):
        get_conversations("shakespeare")


def test_translation_conversations_hold_out_dev_and_never_use_test():
    from lmlab.data.bitext import get_parallel_corpus

    pairs = get_parallel_corpus("jupyterlab_en_fr_tiny")
    conversations = get_conversations("translate_en_fr_tiny")
    assert len(conversations.train) == len(pairs.train) and len(conversations.val) == len(pairs.dev)
    user, assistant = conversations.train[0]
    assert user["content"] == TRANSLATE_PROMPT + pairs.train[0][0] and assistant["content"] == pairs.train[0][1]
    test_sources = {TRANSLATE_PROMPT + s for s, _ in pairs.test}
    assert not test_sources & {c[0]["content"] for c in conversations.train + conversations.val}
    assert test_sources
