"""`lmlab eval --corpus` (lmlab.eval.run): another corpus's held-out split in the run's tokens; on
the run's own corpus it is exactly the plain evaluation; bytes are the held-out text's."""

import json
import math
import re

import pytest

from lmlab import cli
from lmlab.data.corpora import get_corpus
from lmlab.eval.run import evaluate_run
from lmlab.runs import load_run
from tests.tiny_runs import TEXT, write_tiny_run

LINES = TEXT.splitlines()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(write_tiny_run(tmp_path_factory.mktemp("runs") / "gpt"))


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory):
    """A folder of text files made of the tiny run's characters (its char tokenizer knows them all)."""
    folder = tmp_path_factory.mktemp("other")
    for i in range(6):
        (folder / f"doc{i}.txt").write_text("\n".join(LINES[j % len(LINES)] for j in range(i, i + 7)) + "\n")
    return str(folder)


def scored_bytes(result):
    """The UTF-8 bytes the figures were divided by: val_bpb = nll / ln 2 / bytes."""
    return result["val_loss"] * result["val_tokens"] / math.log(2) / result["val_bpb"]


def test_own_corpus_gives_exactly_the_plain_figures(run):
    plain = evaluate_run(run)
    named = evaluate_run(run, corpus=run.config.data.corpus)
    assert named.pop("corpus") == "shakespeare_tiny"
    assert named == plain  # the same held-out documents, the same ids, bit for bit


def test_another_corpus_counts_its_heldout_text_bytes(run, other_corpus):
    files_before = sorted(p for p in run.run_dir.rglob("*"))
    result = evaluate_run(run, corpus=other_corpus)
    assert sorted(p for p in run.run_dir.rglob("*")) == files_before  # the run directory is only read
    plain = evaluate_run(run)
    assert result["corpus"] == other_corpus and result["val_bpb"] != plain["val_bpb"]
    val_docs = get_corpus(other_corpus).val_docs
    ids = [i for doc in val_docs for i in run.tokenizer.encode(doc) + [run.tokenizer.eos_id]]
    assert result["val_tokens"] == len(ids) - 1
    # Every held-out byte is scored once, but the first token's: it is context, never a target.
    first = len(run.tokenizer.decode([ids[0]]).encode("utf-8"))
    expected = sum(len(doc.encode("utf-8")) for doc in val_docs) - first
    assert scored_bytes(result) == pytest.approx(expected, rel=1e-9)
    # Windows of another length: another loss, the same bytes.
    assert scored_bytes(evaluate_run(run, corpus=other_corpus, seq_len=8)) == pytest.approx(expected, rel=1e-9)


def test_cli_prints_the_corpus_and_refuses_bad_ones_in_one_line(run, other_corpus, tmp_path, capsys):
    assert cli.main(["eval", str(run.run_dir), "--corpus", other_corpus, "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["corpus"] == other_corpus
    for args, status, message in [
        (["--corpus", "no_such_corpus"], 2, "lmlab eval: error: --corpus 'no_such_corpus' is neither a registered"),
        (["--corpus", str(tmp_path / "missing.txt")], 1, "lmlab: error: "),
        (["--corpus", other_corpus, "--choices", "x.jsonl"], 2, "lmlab eval: error: --choices and --corpus"),
    ]:
        assert cli.main(["eval", str(run.run_dir), *args]) == status
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if re.match(r"lmlab( eval)?: error: ", line)]
        assert len(lines) == 1 and lines[0].startswith(message) and "Traceback" not in err, err
