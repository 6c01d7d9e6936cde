"""chatterbot-corpus dialogues (lmlab.data.chatterbot): the YAML layout on inline samples and on a
wheel built here, one-line errors naming the file, and the real pinned package."""

import logging
import zipfile

import pytest

from lmlab.config import ConfigError
from lmlab.data import chatterbot
from lmlab.data.conversations import alternating_conversation, get_conversations
from lmlab.data.wheels import WheelUnavailableError

SAMPLE = """categories:
- demo
conversations:
- - Hello
  - Hi there!
- - Do you like robots?
  - No
  - Why not?
  - |
    They never pay for dinner.
    Not once.
- - In what year?
  - '1984'
- A mis-indented question?
  - 'its answer'
- - A question nobody answers
- - ''
  - an answer to nothing
"""


def test_parse_category_reads_turns_as_strings_and_skips_broken_entries():
    conversations, skipped = chatterbot.parse_category(SAMPLE, "demo.yml")
    assert conversations == [
        ("Hello", "Hi there!"),
        ("Do you like robots?", "No", "Why not?", "They never pay for dinner.\nNot once."),
        ("In what year?", "1984"),
    ]
    assert skipped == ["demo.yml: conversations[3] is not a list of strings",
                       "demo.yml: conversations[4] has no reply or an empty turn",
                       "demo.yml: conversations[5] has no reply or an empty turn"]


def test_unquoted_yes_no_and_numbers_stay_text():
    conversations, _ = chatterbot.parse_category("conversations:\n- - Sure?\n  - yes\n- - How many?\n  - 22\n", "x.yml")
    assert conversations == [("Sure?", "yes"), ("How many?", "22")]


@pytest.mark.parametrize("text, words", [
    ("conversations:\n- - Hello\n  - Hi\n -: [\n", "bad.yml:4: not valid YAML"),
    ("- - Hello\n  - Hi\n", "bad.yml: expected a mapping with a \"conversations\" list"),
    ("categories:\n- demo\n", "bad.yml: expected a mapping with a \"conversations\" list"),
    ("categories:\n- demo\nconversations: []\n", "bad.yml: no conversations (an empty category)"),
    ("conversations:\n- - only a question\n", "bad.yml: no conversations (an empty category)"),
])
def test_malformed_files_are_one_line_errors_naming_the_file(text, words):
    with pytest.raises(ValueError) as info:
        chatterbot.parse_category(text, "bad.yml")
    assert str(info.value).startswith(words) and "\n" not in str(info.value)


def test_alternating_roles_and_a_last_question_without_reply_dropped():
    assert alternating_conversation(("a", "b", "c")) == ({"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"})
    assert [m["role"] for m in alternating_conversation(("a", "b", "c", "d"))] == ["user", "assistant"] * 2


def make_wheel(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"chatterbot_corpus/data/{name}", text)
        archive.writestr("chatterbot_corpus/__init__.py", "")
    return path


def test_read_language_picks_its_folder_in_file_order_and_drops_repeats(tmp_path, caplog):
    wheel = make_wheel(tmp_path / "corpus.whl", {
        "english/b.yml": "conversations:\n- - Hi\n  - Hello\n- - Bye\n  - See you\n- - Hi\n  - Hello\n",
        "english/a.yml": "conversations:\n- - Thanks\n  - You're welcome\n- broken\n",
        "french/a.yml": "conversations:\n- - Bonjour\n  - Salut\n",
    })
    with caplog.at_level(logging.INFO, logger="lmlab"):
        english = chatterbot.read_language(wheel, "english")
    assert english == [("Thanks", "You're welcome"), ("Hi", "Hello"), ("Bye", "See you")]
    assert "3 conversations from 2 files (1 repeats dropped, 1 malformed entries skipped)" in caplog.text
    assert "english/a.yml: conversations[1] is not a list of strings" in caplog.text
    assert chatterbot.read_language(wheel, "french") == [("Bonjour", "Salut")]
    with pytest.raises(ConfigError, match="names the chatterbot language 'klingon', .* it has english, french$"):
        chatterbot.read_language(wheel, "klingon")


def test_a_broken_file_in_the_wheel_is_named(tmp_path):
    wheel = make_wheel(tmp_path / "corpus.whl", {"english/a.yml": "conversations: [\n"})
    with pytest.raises(ValueError, match=r"^corpus.whl/chatterbot_corpus/data/english/a.yml:2: not valid YAML"):
        chatterbot.read_language(wheel, "english")


def test_names_and_languages():
    assert [chatterbot.is_chatterbot(n) for n in ("chatterbot", "chatterbot:chinese", "chatterbots", "x.jsonl")] == [
        True, True, False, False]
    assert chatterbot.language_of("chatterbot") == "english"
    assert chatterbot.language_of("chatterbot:chinese") == "chinese"


@pytest.fixture(scope="module")
def english():
    try:  # the pinned wheel, through the cache (downloaded once, as at preparation time)
        return get_conversations("chatterbot")
    except WheelUnavailableError as error:  # offline and no wheel: say how to fix it
        pytest.skip(str(error))


def test_the_real_english_dialogues(english):
    assert (len(english.train), len(english.val)) == (859, 39)
    assert english == get_conversations("chatterbot")  # deterministic
    first = lambda conversations: {c[0]["content"] for c in conversations}  # noqa: E731
    assert not first(english.train) & first(english.val)  # held out by conversation, prompts included
    everything = english.train + english.val
    assert len({tuple(m["content"] for m in c) for c in everything}) == len(everything) == 898  # repeats dropped
    assert ({"role": "user", "content": "What is AI?"}, {"role": "assistant", "content": (
        "Artificial Intelligence is the branch of engineering and science devoted to constructing machines "
        "that think.")}) in english.train
    assert all(m["role"] == ("user", "assistant")[i % 2] and m["content"] for c in everything
               for i, m in enumerate(c)) and all(len(c) % 2 == 0 for c in everything)


def test_another_language_section(english):
    chinese = get_conversations("chatterbot:chinese")
    assert (len(chinese.train), len(chinese.val)) == (442, 23)
    assert chinese.train[0][0] == {"role": "user", "content": "什么是ai"}
