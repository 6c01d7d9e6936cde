"""lmlab tokenize: pieces and their byte spans, the boundary rendering, sources, the CLI."""

from __future__ import annotations

import json

import pytest

from lmlab import cli, token_view
from lmlab.data.corpora import Corpus
from lmlab.tokenizers import train_tokenizer

TEXT = "the cat sat on the mat, the end. 12 漢"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    return train_tokenizer("bytebpe", "the cat sat on the mat. " * 20, vocab_size=271, out_dir=out)  # every word whole


def test_pieces_cover_the_text_byte_for_byte(tokenizer):
    found = token_view.pieces(tokenizer, TEXT)
    assert b"".join(p.data for p in found) == TEXT.encode("utf-8")
    assert [p.start for p in found[1:]] == [p.end for p in found[:-1]] and found[-1].end == len(TEXT.encode())
    assert [p.id for p in found] == tokenizer.encode(TEXT)


def test_summary_counts_bytes_per_token(tokenizer):
    found = token_view.pieces(tokenizer, "the mat")
    result = token_view.summary(tokenizer, "the mat", found)
    assert [t["piece"] for t in result["tokens"]] == ["the", " mat"]
    assert (result["count"], result["bytes"], result["bytes_per_token"]) == (2, 7, 3.5)
    halves = token_view.summary(tokenizer, "漢", token_view.pieces(tokenizer, "漢"))
    assert [t["piece"] for t in halves["tokens"]] == [r"\xe6", r"\xbc", r"\xa2"]  # bytes of one character
    assert token_view.summary(tokenizer, "", [])["bytes_per_token"] is None


def test_render_plain_and_coloured(tokenizer):
    found = token_view.pieces(tokenizer, "the mat\n")
    assert token_view.render(found, color=False) == r"[the][ mat][\n]"
    coloured = token_view.render(found, color=True)
    assert coloured.count("\x1b[0m") == 3 and "48;5;153mthe" in coloured and "48;5;223m mat" in coloured
    assert token_view.table(found)[:3] == ["   #   id  piece", f"   0  {found[0].id}  'the'", f"   1  {found[1].id}  ' mat'"]


def test_sources_run_dir_tokenizer_dir_and_cached_kind(tokenizer, tmp_path, monkeypatch):
    tokenizer.save(tmp_path / "run" / "tokenizer")
    for source in (tmp_path / "run", tmp_path / "run" / "tokenizer"):
        opened, description = token_view.open_source(str(source))
        assert opened.encode(TEXT) == tokenizer.encode(TEXT) and "bytebpe, 271 ids" in description
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    calls = []
    def tiny_corpus(name):
        calls.append(name)
        return Corpus(name, ["to be or not to be " * 30], [], ["a"], [])
    monkeypatch.setattr(token_view, "get_corpus", tiny_corpus)
    first, _ = token_view.open_source("bytebpe", vocab_size=262)
    second, description = token_view.open_source("bytebpe", vocab_size=262)
    assert calls == ["shakespeare"]  # trained once, then read from the cache
    assert first.vocab_size == second.vocab_size == 262 and "shakespeare-bytebpe-262" in description
    with pytest.raises(token_view.UnknownSourceError, match="nope: neither a run or tokenizer directory"):
        token_view.open_source("nope")


def test_cli_tokenize_plain_when_piped_and_json(tokenizer, tmp_path, capsys):
    tokenizer.save(tmp_path / "tok")
    assert cli.main(["tokenize", str(tmp_path / "tok"), "--text", "the mat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "[the][ mat]" and lines[-1] == "2 tokens, 7 bytes, 3.50 bytes/token"
    assert cli.main(["tokenize", str(tmp_path / "tok"), "--text", "the mat", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 2 and result["tokens"][1] == {"id": tokenizer.encode(" mat")[0], "piece": " mat",
                                                            "start": 3, "end": 7}
    assert cli.main(["tokenize", "nope", "--text", "x"]) == 2
    assert capsys.readouterr().err.startswith("lmlab tokenize: error: nope: neither")


def test_cli_tokenize_colours_a_terminal_unless_no_color(tokenizer, tmp_path, capsys, monkeypatch):
    tokenizer.save(tmp_path / "tok")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli.main(["tokenize", str(tmp_path / "tok"), "--text", "the mat"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "\x1b[30;48;5;153mthe\x1b[0m\x1b[30;48;5;223m mat\x1b[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.main(["tokenize", str(tmp_path / "tok"), "--text", "the mat"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "[the][ mat]"
