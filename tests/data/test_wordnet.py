"""The WordNet multiple-choice builder on a small hand-written copy of WordNet's file format."""

from __future__ import annotations

import json

import pytest

from lmlab.data import wordnet
from lmlab.eval.choices import read_choices

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
# data.<pos>: offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt [pointers] | gloss; "examples"
DATA_NOUN = LICENCE + "".join([
    "00000001 05 n 02 dog 0 domestic_dog 0 000 | a domesticated carnivorous mammal; \"the dog barked\"  \n",
    "00000002 05 n 01 cat 0 000 | a small feline kept as a pet  \n",
    "00000003 05 n 02 harbor 0 seaport 0 000 | a place where ships take on cargo  \n",
    "00000004 05 n 01 tribe 0 000 | a social division of people  \n",
    "00000005 05 n 01 canine 0 000 | one of the four pointed conical teeth  \n",
    "00000006 05 n 01 pencil 0 000 | a pencil for writing  \n",
    "00000007 05 n 02 hound 0 dog 1 000 | any of several breeds of dog used for hunting  \n",
])
# index.<pos>: lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets (most frequent first)
INDEX_NOUN = LICENCE + "".join([
    "cat n 1 0 1 1 00000002  \n",
    "dog n 2 1 @ 2 2 00000001 00000007  \n",
    "domestic_dog n 1 0 1 0 00000001  \n",  # two words: skipped
    "harbor n 1 0 1 1 00000003  \n",
    "hound n 1 0 1 1 00000007  \n",
    "pencil n 1 0 1 1 00000006  \n",  # its gloss says "pencil": skipped
    "seaport n 1 0 1 0 00000003  \n",  # never tagged in the corpus: skipped
    "tribe n 1 0 1 1 00000004  \n",
    "canine n 1 0 1 1 00000005  \n",
])


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    (tmp_path / "index.noun").write_text(INDEX_NOUN)
    return tmp_path


def test_read_senses_keeps_common_single_words_with_their_first_gloss(data_dir):
    senses = wordnet.read_senses(data_dir, "noun")
    assert [(s.word, s.gloss) for s in senses] == [
        ("cat", "a small feline kept as a pet"),
        ("dog", "a domesticated carnivorous mammal"),  # the first sense, without its example
        ("harbor", "a place where ships take on cargo"),
        ("hound", "any of several breeds of dog used for hunting"),
        ("tribe", "a social division of people"),
        ("canine", "one of the four pointed conical teeth")]
    assert senses[1].synonyms == {"dog", "domestic_dog"}


def test_questions_are_valid_deterministic_and_avoid_synonyms(data_dir, tmp_path):
    senses = {"noun": wordnet.read_senses(data_dir, "noun")}
    questions = wordnet.build_questions(senses, 6, seed=3)
    assert questions == wordnet.build_questions(senses, 6, seed=3)
    by_gloss = {s.gloss: s for s in senses["noun"]}
    for q in questions:
        gloss = q["question"].removeprefix('Question: Which word means "').removesuffix('"?\nAnswer:')
        sense = by_gloss[gloss]
        assert q["choices"][q["answer"]] == sense.word and len(set(q["choices"])) == 4
        assert not (set(q["choices"]) - {sense.word}) & sense.synonyms
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    assert [q.answer for q in read_choices(path)] == [q["answer"] for q in questions]
    with pytest.raises(ValueError, match="asked for 7 questions, but WordNet gives only 6"):
        wordnet.build_questions(senses, 7)


def test_cached_package_is_not_fetched_again(tmp_path, monkeypatch):
    data = tmp_path / "wordnet" / "usr" / "share" / "wordnet"
    data.mkdir(parents=True)
    (data / "data.noun").write_text("")
    monkeypatch.setattr(wordnet, "_run", lambda *a, **k: pytest.fail("fetched although cached"))
    assert wordnet.wordnet_dir(tmp_path) == data


def test_missing_tool_is_one_line_oserror(tmp_path):
    with pytest.raises(OSError, match="no-such-tool-xyz not found: fetching wordnet-base needs a Debian"):
        wordnet._run(["no-such-tool-xyz"], cwd=tmp_path)
    with pytest.raises(OSError, match=r"^false failed: exit 1$"):
        wordnet._run(["false"])


def test_main_writes_the_set_and_a_summary(data_dir, tmp_path, monkeypatch, capsys):
    (data_dir / "data.verb").write_text(LICENCE)
    (data_dir / "index.verb").write_text(LICENCE)
    (data_dir / "data.adj").write_text(LICENCE)
    (data_dir / "index.adj").write_text(LICENCE)
    monkeypatch.setattr(wordnet, "wordnet_dir", lambda: data_dir)
    out = tmp_path / "set.jsonl"
    assert wordnet.main(["--out", str(out), "--n", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 5 and len(read_choices(out)) == 5
    assert wordnet.main(["--out", str(out), "--n", "50"]) == 1
    assert capsys.readouterr().err.strip() == "lmlab: error: asked for 50 questions, but WordNet gives only 6 usable words"
