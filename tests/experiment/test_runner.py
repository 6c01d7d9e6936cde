"""A real tiny experiment (2 variants x 1 seed, 20 steps each) through `lmlab experiment`: outputs,
held-out bpb at twice the training length (against a naive reference and `lmlab eval --seq-len`),
a rerun that skips finished runs, and an interrupted experiment that resumes."""

import json
import pathlib
import shutil
import textwrap

import numpy as np
import pytest

from lmlab import cli

BASE = pathlib.Path(__file__).resolve().parents[2] / "configs" / "gpt_shakespeare.py"

EXPERIMENT = """
    EXPERIMENT = Experiment(base=BASE, variants=[("rope", {"model.positions": "rope"}),
                                                 ("learned", {"model.positions": "learned"})],
                            tiny_variants={"learned": {"model.max_len": 32}}, tiny_seeds=1,
                            measures=[HeldOutBpb(multiples=(1, 2)), Size()])
"""


def _run(capsys, path, runs, *extra):
    capsys.readouterr()
    rc = cli.main(["experiment", str(path), "--scale", "tiny", "--runs-dir", str(runs), *extra])
    out, err = capsys.readouterr()
    return rc, json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """(experiment file, runs directory, the experiment's directory) after one complete tiny run."""
    root = tmp_path_factory.mktemp("exp")
    path = root / "experiments" / "tiny_ablation.py"
    path.parent.mkdir()
    path.write_text(f"from lmlab.experiment import Experiment, HeldOutBpb, Size\nBASE = {str(BASE)!r}\n"
                    + textwrap.dedent(EXPERIMENT))
    runs = root / "runs"
    rc = cli.main(["experiment", str(path), "--scale", "tiny", "--jobs", "2", "--runs-dir", str(runs)])
    assert rc == 0
    return path, runs, runs / "tiny_ablation-tiny"


def test_outputs_hold_every_variant_and_every_measurement(done):
    path, runs, exp = done
    md = (exp / "results" / "tiny_ablation.md").read_text()
    assert not (path.parent / "results").exists()  # tiny never writes beside the experiment file
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines() if line.startswith("| ")}
    header = rows["variant"]
    assert header[:3] == ["| variant", "seeds", "val_bpb"] and header[-1] == "kv_bytes_per_token |"
    assert rows["rope"][1] == "1" and rows["learned"][1] == "1"
    at64 = header.index("bpb@64")
    assert rows["learned"][at64] == "n/a" and rows["rope"][at64] != "n/a"  # learned table stops at 32
    data = json.loads((exp / "results" / "tiny_ablation.json").read_text())
    rope = next(r for r in data["runs"] if r["variant"] == "rope")
    summary = json.loads((exp / "rope" / "seed-0" / "eval.json").read_text())
    # The 1x measurement is the end-of-run evaluation again: the same windows, the same number.
    assert rope["metrics"]["bpb@32"] == pytest.approx(summary["val_bpb"], rel=1e-6)
    assert rope["metrics"]["params"] == summary["params"] and rope["config"]["model"]["positions"] == "rope"
    # 2 x 1 layer x 2 kv heads x 16 dims x 4 bytes
    assert rope["metrics"]["kv_bytes_per_token"] == 256
    if _has_matplotlib():
        assert (exp / "results" / "tiny_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_bpb_at_twice_the_length_equals_a_naive_pass_and_lmlab_eval(done, capsys):
    import jax.numpy as jnp

    from lmlab.data.token_file import read_token_file
    from lmlab.runs import load_run

    _, _, exp = done
    run_dir = exp / "rope" / "seed-0"
    measured = json.loads((run_dir / "measurements.json").read_text())["bpb_x1_2"]["bpb@64"]
    run = load_run(run_dir)
    val = np.asarray(read_token_file(run_dir / "data" / "val.bin"))
    byte_lengths = run.tokenizer.token_byte_lengths()
    nll, n_bytes = 0.0, 0
    for start in range(0, len(val) - 1, 64):  # non-overlapping windows of 64 targets, the last one short
        window = val[start:start + 65]
        logits = np.asarray(run.model(jnp.asarray(window[None, :-1]))[0][0], np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        nll -= logp[np.arange(len(window) - 1), window[1:]].sum()
        n_bytes += int(byte_lengths[window[1:]].sum())
    assert measured == pytest.approx(nll / np.log(2) / n_bytes, rel=1e-4)

    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--seq-len", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seq_len"] == 64 and out["val_bpb"] == pytest.approx(measured, rel=1e-6)
    assert cli.main(["eval", str(exp / "learned" / "seed-0"), "--seq-len", "64"]) == 2
    assert capsys.readouterr().err == ("lmlab: error: --seq-len 64 exceeds model.max_len 32: this run's learned "
                                       "positions have no table past it\n")


def test_rerun_skips_finished_runs(done, capsys):
    path, runs, exp = done
    logs = {p: p.stat().st_size for p in (exp / "logs").iterdir()}
    rc, result, _ = _run(capsys, path, runs)
    assert rc == 0 and (result["skipped"], result["done"], result["failed"]) == (2, 0, 0)
    assert {p: p.stat().st_size for p in (exp / "logs").iterdir()} == logs  # no worker started


def test_interrupted_experiment_resumes(done, capsys):
    """One run stopped after its step-10 checkpoint, the other while it was being measured: the
    rerun resumes the first (to the same final numbers as uninterrupted) and measures the second."""
    path, runs, exp = done
    before = {v: json.loads((exp / v / "seed-0" / "eval.json").read_text()) for v in ("rope", "learned")}
    rope = exp / "rope" / "seed-0"
    shutil.rmtree(rope / "checkpoints" / "20")
    for name in ("eval.json", "measurements.json"):
        (rope / name).unlink()
    learned = exp / "learned" / "seed-0" / "measurements.json"
    measured = json.loads(learned.read_text())
    del measured["size"], measured["host"]
    learned.write_text(json.dumps(measured))
    rc, result, _ = _run(capsys, path, runs, "--jobs", "2")
    assert rc == 0 and (result["done"], result["skipped"]) == (2, 0)
    assert "resumed from step 10" in (exp / "logs" / "rope-seed-0.log").read_text()
    log = (exp / "logs" / "learned-seed-0.log").read_text()
    assert log.count("training learned/seed-0") == 1 and log.count(": size in ") == 2  # measured again, not trained
    assert log.split("training learned")[-1].count("bpb_x1_2 in") == 1  # what it had is kept
    for v in ("rope", "learned"):
        after = json.loads((exp / v / "seed-0" / "eval.json").read_text())
        assert after["val_loss"] == pytest.approx(before[v]["val_loss"], rel=1e-6)
    assert (exp / "rope" / "seed-0" / "measurements.json").exists()


def test_a_run_waits_for_the_runs_it_names(write_experiment, tmp_path):
    from lmlab.experiment.runner import Context, waiting_on

    path = write_experiment("""
        EXPERIMENT = Experiment(base=BASE, requires={"teacher": BASE},
                                variants=[("kd", {"distill.teacher": "{teacher}"}), ("alone", {})])
    """)
    jobs = Context.load(path, scale="tiny", seeds=1, runs_dir=tmp_path).jobs()
    teacher, kd, alone = jobs
    assert waiting_on(kd, jobs, {0: "failed (exit status 1); log: x"}) == "not started: it needs teacher, not finished"
    assert waiting_on(kd, jobs, {0: "skipped"}) is None and waiting_on(kd, jobs, {0: "done"}) is None
    assert waiting_on(alone, jobs, {}) is None
