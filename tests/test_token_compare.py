"""lmlab tokenize compare: the measures, the table and the bar chart, on small texts."""

from __future__ import annotations

import json

import numpy as np

from lmlab import cli, plot, token_compare
from lmlab.tokenizers import CharTokenizer, train_tokenizer

TEXTS = {"English": "to be or not to be", "Chinese": "苹果 手机", "Python": "def f(x):\n    return x"}


def test_units_and_measures_by_hand():
    assert token_compare.units("English", TEXTS["English"]) == 6
    assert token_compare.units("Chinese", TEXTS["Chinese"]) == 4  # characters, spaces not counted
    tok = CharTokenizer(sorted(set("to be or n")))  # Chinese and most code characters fall back to bytes
    result = token_compare.measure(tok, TEXTS)
    assert result["English"] == {"tokens": 18, "per_byte": 1.0, "per_unit": 3.0}
    assert result["Chinese"]["tokens"] == 13 and result["Chinese"]["per_unit"] == 13 / 4  # 4 x 3 bytes + space


def test_compare_table_and_files(tmp_path, monkeypatch):
    char_dir, bpe_dir = tmp_path / "char", tmp_path / "bpe"
    train_tokenizer("char", "to be or not to be", vocab_size=0, out_dir=char_dir)
    train_tokenizer("bytebpe", "to be or not to be " * 5, vocab_size=262, out_dir=bpe_dir)
    monkeypatch.setattr(token_compare, "TOKENIZERS", (("chars", str(char_dir), 0), ("own", str(bpe_dir), 0)))
    monkeypatch.setattr(token_compare, "load_texts", lambda max_chars: TEXTS)
    result = token_compare.compare()
    assert [row["tokenizer"] for row in result["rows"]] == ["chars", "own"]
    assert result["rows"][1]["English"]["tokens"] < result["rows"][0]["English"]["tokens"]
    assert result["probes"]["chars"][0].startswith("[B][o][r][n]")  # unseen letters: one byte token each
    lines = token_compare.markdown(result).splitlines()
    assert lines[0].startswith("| tokenizer | ids | English tok/byte | English tok/word | Chinese tok/byte | Chinese tok/char")
    assert lines[2].startswith("| chars | ") and lines[2].count("|") == 9
    assert cli.main(["tokenize", "compare", "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert (tmp_path / "out" / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_bars_are_proportional():
    canvas = plot.render_bars(np.array([[1.0, 0.5]]), width=200, height=100)
    columns = [np.flatnonzero((canvas[:, x] != 255).any(-1) & (canvas[:, x] != 160).any(-1)) for x in range(200)]
    heights = sorted({len(c) for c in columns if len(c)} - {0})
    tall, short = max(heights), [h for h in heights if h > 5]
    base_to_top = 100 - 2 * plot.BAR_MARGIN
    assert tall >= base_to_top and any(abs(h - base_to_top / 2) <= 2 for h in short)
