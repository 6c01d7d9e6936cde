"""`lmlab prepare`: token files made once and reused by `lmlab train`; bad input is one line, exit 1 or 2,
and leaves no run directory behind."""

import json
import math
import re

import pytest

from lmlab import cli

CONFIG = "configs/gpt_shakespeare.py"
TINY = ["--config.tokenizer.kind=char", "--config.data.seq_len=16", "--config.data.batch_size=4",
        "--config.model.n_layers=1", "--config.model.d_model=16", "--config.model.n_heads=2",
        "--config.model.n_kv_heads=2", "--config.model.d_ff=32", "--config.train.steps=2",
        "--config.train.steps_per_call=2", "--config.train.warmup_steps=0", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2", "--config.train.eval_batches=1", "--config.sample.prompts=()"]


def folder(root, n=10):
    root.mkdir()
    for i in range(n):
        (root / f"doc{i}.txt").write_text(f"Speaker {i}:\nWhat light through yonder window breaks?\n" * 8)
    return root


def test_prepare_then_train_reuses_the_token_files(tmp_path, capsys):
    docs, run = folder(tmp_path / "docs"), tmp_path / "run"
    assert cli.main(["prepare", CONFIG, *TINY, f"--config.data.corpus={docs}", "--workdir", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    counts = summary["sources"][str(docs)]
    assert counts["train"]["documents"] + counts["val"]["documents"] == 10
    assert counts["train"]["tokens"] == counts["train"]["bytes"] + counts["train"]["documents"]  # chars + eos
    stamp = (run / "data" / "train.bin").stat().st_mtime_ns
    assert cli.main(["train", CONFIG, *TINY, f"--config.data.corpus={docs}", "--workdir", str(run),
                     "--no-progress"]) == 0
    assert (run / "data" / "train.bin").stat().st_mtime_ns == stamp
    assert "val_bpb" in json.loads(capsys.readouterr().out.splitlines()[-1])
    # the run directory belongs to this data now: other data is refused like a changed resume
    assert cli.main(["prepare", CONFIG, *TINY, "--config.data.corpus=shakespeare_tiny", "--workdir", str(run)]) == 2
    assert "was created with data.corpus=" in capsys.readouterr().err


def test_train_on_a_jsonl_file(tmp_path, capsys):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"Line {i}: the quick brown fox.\n" * 5}) + "\n" for i in range(30)))
    assert cli.main(["train", CONFIG, *TINY, f"--config.data.corpus={path}", "--workdir", str(tmp_path / "run"),
                     "--no-progress"]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out.splitlines()[-1])["val_loss"])


def _bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notext.jsonl").write_text('{"text": "fine"}\n{"body": "oops"}\n')
    binary = folder(tmp_path / "withbinary")
    (binary / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    small = tmp_path / "small"
    small.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (small / name).write_text("hi\n")
    return [
        ("data.corpus", str(tmp_path / "empty"), 1, f"the folder {tmp_path / 'empty'} has no files"),
        ("data.corpus", str(tmp_path / "notext.jsonl"), 1, f"{tmp_path / 'notext.jsonl'}:2: no \"text\" key"),
        ("data.corpus", str(binary), 1, f"{binary / 'photo.jpg'}: not a text file"),
        ("data.corpus", str(small), 1, f"corpus {small}: its training split has"),
        ("data.mixture", "shakespeare:0.7,python_stdlib:much", 2, "the weight 'much' of 'python_stdlib:much'"),
        ("data.mixture", "shakespeare:0,python_stdlib:0", 2, "the weights sum to 0"),
    ]


@pytest.mark.parametrize("case", range(6), ids=["empty folder", "jsonl without text", "binary file",
                                                "smaller than a window", "weight not a number", "weights sum to 0"])
def test_bad_input_is_one_line_and_leaves_no_run_directory(tmp_path, capsys, case):
    key, value, code, message = _bad_inputs(tmp_path)[case]
    run = tmp_path / "run"
    assert cli.main(["prepare", CONFIG, *TINY, f"--config.{key}={value}", "--workdir", str(run)]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lmlab")]
    assert len(lines) == 1 and re.match(r"lmlab: error: ", lines[0]) and message in lines[0], lines
    assert not run.exists()
