"""gettext catalogs (.po text, .mo binary) -> English/French pairs; the fixed hash split."""

import struct

import pytest

from lmlab.data.bitext import ParallelCorpus, get_parallel_corpus, split_of
from lmlab.data.po_catalogs import (
    CatalogEntry,
    catalog_pairs,
    dedupe_pairs,
    parse_mo,
    parse_po,
    unescape_c,
)
from lmlab.data.wheels import WheelUnavailableError

CATALOG = r'''# French translation.
# Translators:
msgid ""
msgstr ""
"Project-Id-Version: demo\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\n"

#: app.py:10
msgid "Save the notebook"
msgstr "Enregistrer le notebook"

#. A message split over several lines, with escapes.
msgid ""
"The file \"%1\" has changed on disk.\n"
"Reload it?"
msgstr ""
"Le fichier « %1 » a changé sur le disque.\n"
"Le recharger ?"

msgid "Tab\there, backslash \\ and octal \101"
msgstr "Tabulation\tici, barre \\ et octal \101"

#, fuzzy, python-format
msgid "Delete %s"
msgstr "Supprimer %s"

msgid "Not translated yet"
msgstr ""

msgctxt "abbrev. month"
msgid "Jan"
msgstr "janv."
msgid "%d file"
msgid_plural "%d files"
msgstr[0] "%d fichier"
msgstr[1] "%d fichiers"

#~ msgid "Old string"
#~ msgstr "Ancienne chaîne"
'''


def test_parse_po_entries():
    entries = parse_po(CATALOG)
    assert [e.msgid for e in entries] == ["", "Save the notebook", 'The file "%1" has changed on disk.\nReload it?',
                                          "Tab\there, backslash \\ and octal A", "Delete %s", "Not translated yet",
                                          "Jan", "%d file", "Old string"]
    header, _, multi, _, fuzzy, empty, month, plural, old = entries
    assert "Plural-Forms: nplurals=2" in header.msgstr[0] and header.msgstr[0].endswith("\n")
    assert multi.msgstr == ("Le fichier « %1 » a changé sur le disque.\nLe recharger ?",)
    assert fuzzy.fuzzy and not multi.fuzzy
    assert empty.msgstr == ("",)
    assert month.msgctxt == "abbrev. month" and month.msgstr == ("janv.",)  # no blank line before the next entry
    assert plural.msgid_plural == "%d files" and plural.msgstr == ("%d fichier", "%d fichiers")
    assert old.obsolete and old.msgstr == ("Ancienne chaîne",)


def test_catalog_pairs_skip_header_fuzzy_empty_and_obsolete():
    assert catalog_pairs(parse_po(CATALOG)) == [
        ("Save the notebook", "Enregistrer le notebook"),
        ('The file "%1" has changed on disk. Reload it?', "Le fichier « %1 » a changé sur le disque. Le recharger ?"),
        ("Tab here, backslash \\ and octal A", "Tabulation ici, barre \\ et octal A"),
        ("Jan", "janv."),
        ("%d file", "%d fichier"),    # singular -> msgstr[0]
        ("%d files", "%d fichiers"),  # plural -> msgstr[1]
    ]


def test_malformed_po_is_reported_with_its_line():
    with pytest.raises(ValueError, match="line 2"):
        parse_po('msgid "a"\nmsgstr unquoted\n')
    with pytest.raises(ValueError, match="line 1"):
        parse_po('"orphan continuation"\n')


def test_unescape_c():
    assert unescape_c(r"a\nb\t\"c\"\\\x41\101\?") == 'a\nb\t"c"\\AA?'


def write_mo(entries, byteorder="<"):
    """A .mo file as GNU msgfmt lays it out (without the optional hash table)."""
    originals, translations = [], []
    for e in entries:
        original = e.msgid + ("\x00" + e.msgid_plural if e.msgid_plural else "")
        originals.append(((e.msgctxt + "\x04") if e.msgctxt else "") + original)
        translations.append("\x00".join(e.msgstr))
    order = sorted(range(len(entries)), key=lambda i: originals[i].encode())
    n = len(entries)
    header_size = 28
    blobs = [originals[i].encode() for i in order] + [translations[i].encode() for i in order]
    table_at = header_size
    data_at = table_at + 16 * n
    table, data = b"", b""
    for blob in blobs:
        table += struct.pack(byteorder + "2I", len(blob), data_at + len(data))
        data += blob + b"\x00"
    header = struct.pack(byteorder + "7I", 0x950412DE, 0, n, table_at, table_at + 8 * n, 0, 0)
    return header + table + data


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_parse_mo_round_trips_contexts_and_plurals(byteorder):
    entries = [CatalogEntry("", ("Content-Type: text/plain; charset=UTF-8\n",)),
               CatalogEntry("Save", ("Enregistrer",)),
               CatalogEntry("Jan", ("janv.",), msgctxt="month"),
               CatalogEntry("%d file", ("%d fichier", "%d fichiers"), msgid_plural="%d files")]
    parsed = parse_mo(write_mo(entries, byteorder))
    assert sorted(parsed, key=lambda e: e.msgid) == sorted(entries, key=lambda e: e.msgid)
    with pytest.raises(ValueError, match="magic"):
        parse_mo(b"\x00" * 32)


def test_dedupe_keeps_the_first_translation_and_drops_long_strings():
    pairs = [("Open", "Ouvrir"), ("Open", "Ouvrir le fichier"), ("x" * 201, "y"), ("Close", "Fermer")]
    assert dedupe_pairs(pairs) == [("Open", "Ouvrir"), ("Close", "Fermer")]


def test_hash_split_is_deterministic_disjoint_and_sized():
    sources = [f"UI string number {i}" for i in range(4000)]
    splits = [split_of(s) for s in sources]
    assert splits == [split_of(s) for s in sources]  # a function of the string alone
    assert split_of("Save the notebook") == split_of("Save the notebook")
    assert 0.08 < splits.count("test") / 4000 < 0.12 and 0.035 < splits.count("dev") / 4000 < 0.065
    # Order and neighbours do not matter: a corpus built from the reversed list splits the same way.
    corpus = ParallelCorpus.from_pairs("demo", "en", "fr", [(s, s.upper()) for s in sources])
    reversed_corpus = ParallelCorpus.from_pairs("demo", "en", "fr", [(s, s.upper()) for s in reversed(sources)])
    for split in ("train", "dev", "test"):
        assert sorted(getattr(corpus, split)) == sorted(getattr(reversed_corpus, split))
    with pytest.raises(ValueError, match="two splits"):
        ParallelCorpus("bad", "en", "fr", [("a", "b")], [], [("a", "c")])


@pytest.fixture(scope="module")
def jupyterlab():
    try:
        return get_parallel_corpus("jupyterlab_en_fr")
    except WheelUnavailableError as error:  # offline and no wheel: say how to fix it
        pytest.skip(str(error))


def test_the_jupyterlab_corpus(jupyterlab):
    """The real catalogs (pinned wheel): sizes of the fixed splits and a few known pairs."""
    c = jupyterlab
    assert (len(c.train), len(c.dev), len(c.test)) == (2691, 174, 302)
    sources = [{s for s, _ in getattr(c, split)} for split in ("train", "dev", "test")]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    pairs = dict(c.train + c.dev + c.test)
    assert pairs["Save All"] == "Tout enregistrer"
    assert all("\n" not in s and "\n" not in t and s and t for s, t in pairs.items())


@pytest.mark.parametrize("keep", [24, 60, -30, -2])
def test_truncated_mo_is_an_error_not_shortened_strings(keep):
    """A cut in the string tables or in the strings: one ValueError, never a silently clipped translation."""
    entries = [CatalogEntry("", ("Content-Type: text/plain; charset=UTF-8\n",)),
               CatalogEntry("Save the notebook", ("Enregistrer le notebook",)),
               CatalogEntry("Reload it?", ("Le recharger ?",))]
    data = write_mo(entries)
    assert len(parse_mo(data)) == 3
    with pytest.raises(ValueError, match="truncated"):
        parse_mo(data[:keep])


def test_po_lines_end_at_newlines_only():
    # A form feed, NEL or LINE SEPARATOR inside a quoted string is text (str.splitlines would cut there).
    text = 'msgid "a\fb\x85c\u2028d"\r\nmsgstr "e\u2028f"\r\n\r\nmsgid "g"\nmsgstr "h"\n'
    entries = parse_po(text)
    assert [(e.msgid, e.msgstr) for e in entries] == [("a\fb\x85c\u2028d", ("e\u2028f",)), ("g", ("h",))]


@pytest.mark.parametrize("line", ['msgstr "b\\"', 'msgstr "b" "c"', 'msgstr "b"c"'])
def test_a_string_with_an_escaped_or_stray_quote_is_refused(line):
    with pytest.raises(ValueError, match="line 2: expected a quoted string"):
        parse_po(f'msgid "a"\n{line}\n')


def test_escaped_quotes_and_a_final_backslash_parse():
    entries = parse_po('msgid "say \\"hi\\""\nmsgstr "C:\\\\"\n')
    assert (entries[0].msgid, entries[0].msgstr) == ('say "hi"', ("C:\\",))


def test_numeric_escapes_are_utf8_bytes_like_msgfmt():
    # GNU msgfmt reads \ooo and \xhh as bytes of the file's (UTF-8) text: "caf\303\251" is "café",
    # not the two code points U+00C3 U+00A9, even when a character's bytes span two lines.
    entries = parse_po('msgid "cafe"\nmsgstr "caf\\303\\251 caf\\xc3\\xa9"\n\n'
                       'msgid "split"\nmsgstr ""\n"caf\\303"\n"\\251 \\101"\n')
    assert [e.msgstr for e in entries] == [("café café",), ("café A",)]
    assert unescape_c(r"\342\202\254") == "€"
    with pytest.raises(ValueError, match="UTF-8"):
        parse_po('msgid "a"\nmsgstr "\\351t\\351"\n')  # Latin-1 bytes: refused, not mojibake


def test_po_with_old_mac_line_endings():
    entries = parse_po('msgid "a"\rmsgstr "b"\r\rmsgid "c"\rmsgstr "d"\r')
    assert [(e.msgid, e.msgstr) for e in entries] == [("a", ("b",)), ("c", ("d",))]
