"""The dialogues of PyPI `chatterbot-corpus` (BSD-3-Clause), for supervised fine-tuning.

The wheel (pinned, fetched once with `pip download --no-deps` into ``<cache>/downloads/`` by
lmlab.data.wheels, read as a zip archive, never installed) holds one YAML file per language and
category, ``chatterbot_corpus/data/<language>/<category>.yml``:

    categories:
    - greetings
    conversations:
    - - Hello                 # the user
      - Hi, how are you?      # the assistant, then alternating
    - - ...

`data.corpus = "chatterbot"` names the English dialogues, and `"chatterbot:LANGUAGE"` another
language's folder (e.g. `chatterbot:chinese`). Exact repeats are dropped: English 1.3.3 has 2,025
entries but 898 distinct conversations (`tech_support.yml` lists 10 dialogues 1,050 times).

Parsed with PyPI's PyYAML (already installed for flax and orbax) and its *base* loader, which
reads every scalar as a string: a reply `No` or `1984` stays text instead of becoming False or an
integer. A file that is not valid YAML or not this layout, or a category without a single usable
conversation, is one ValueError naming the file. Single entries the package itself gets wrong (a
mis-indented reply that YAML reads as one string, a question without an answer) are skipped and
counted in the log, never silently.
"""

from __future__ import annotations

import logging
import pathlib
import re
import zipfile

import yaml

from lmlab.config import ConfigError
from lmlab.data.wheels import PinnedWheel, cached_wheel

log = logging.getLogger("lmlab")

CHATTERBOT_WHEEL = PinnedWheel("chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
                               "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154", size=345_706)
NAME = "chatterbot"
DEFAULT_LANGUAGE = "english"
_MEMBER = re.compile(r"chatterbot_corpus/data/([^/]+)/([^/]+)\.ya?ml")
_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # libyaml when present: same result, faster

Turns = tuple[str, ...]  # user, assistant, user, ...


def is_chatterbot(name: str) -> bool:
    return name == NAME or name.startswith(NAME + ":")


def language_of(name: str) -> str:
    """"chatterbot" -> "english"; "chatterbot:chinese" -> "chinese"."""
    return name.partition(":")[2] or DEFAULT_LANGUAGE


def _yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: not valid YAML ({problem})"


def parse_category(text: str, where: str) -> tuple[list[Turns], list[str]]:
    """(the conversations of one category file, a note per skipped entry); `where` names the file."""
    try:
        document = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}{_yaml_error(e)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("conversations"), list):
        raise ValueError(f"{where}: expected a mapping with a \"conversations\" list of lists of strings "
                         "(the chatterbot-corpus layout)")
    conversations, skipped = [], []
    for i, entry in enumerate(document["conversations"]):
        if not isinstance(entry, list) or not all(isinstance(turn, str) for turn in entry):
            skipped.append(f"{where}: conversations[{i}] is not a list of strings")
            continue
        turns = tuple(turn.strip() for turn in entry)
        if len(turns) < 2 or not all(turns):
            skipped.append(f"{where}: conversations[{i}] has no reply or an empty turn")
            continue
        conversations.append(turns)
    if not conversations:
        raise ValueError(f"{where}: no conversations (an empty category)")
    return conversations, skipped


def read_language(wheel_path: pathlib.Path, language: str) -> list[Turns]:
    """The conversations of one language folder, files in name order, exact repeats dropped."""
    with zipfile.ZipFile(wheel_path) as archive:
        members = {m: _MEMBER.fullmatch(m) for m in archive.namelist()}
        available = sorted({match[1] for match in members.values() if match})
        chosen = sorted(m for m, match in members.items() if match and match[1] == language)
        if not chosen:
            raise ConfigError(f"config key 'data.corpus' names the chatterbot language {language!r}, which "
                              f"{CHATTERBOT_WHEEL.requirement} does not have; it has {', '.join(available)}")
        conversations, skipped = [], []
        for member in chosen:
            try:
                text = archive.read(member).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{wheel_path.name}/{member}: not UTF-8 ({e.reason})") from None
            found, notes = parse_category(text, f"{wheel_path.name}/{member}")
            conversations += found
            skipped += notes
    unique = list(dict.fromkeys(conversations))
    for note in skipped:
        log.warning("chatterbot: skipped %s", note)
    log.info("chatterbot %s: %d conversations from %d files (%d repeats dropped, %d malformed entries skipped)",
             language, len(unique), len(chosen), len(conversations) - len(unique), len(skipped))
    return unique


def load_conversations(name: str, cache_root: pathlib.Path | None = None) -> list[Turns]:
    """The turns of `name` ("chatterbot" or "chatterbot:LANGUAGE"), downloading the wheel once."""
    return read_language(cached_wheel(CHATTERBOT_WHEEL, cache_root), language_of(name))
