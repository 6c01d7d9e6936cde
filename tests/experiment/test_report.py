"""The report from run directories written by hand: means and stds equal NumPy's, the finding rule,
n/a for what does not apply, and unfinished runs listed rather than averaged."""

import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from lmlab.experiment import report
from lmlab.experiment.runner import MEASUREMENTS, Context

HOST = {"node": "n1", "cpus": 2, "backend": "cpu", "device_kind": "cpu", "device_count": 1}
BPB = {"a": [2.00, 2.02, 2.01], "b": [1.90, 1.91, 1.92], "c": [2.005, 2.06, 1.96]}


def _fake_run(job, bpb, long_bpb, *, measured=True):
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "eval.json").write_text(json.dumps({"step": job.config.train.steps, "val_bpb": bpb,
                                                       "val_loss": bpb * 0.7, "params": 1000}))
    if measured:
        values = {"bpb@32": bpb, "bpb@64": long_bpb}
        (job.run_dir / MEASUREMENTS).write_text(json.dumps({"bpb_x1_2": values, "host": HOST}))


@pytest.fixture
def ctx(write_experiment, tmp_path):
    path = write_experiment("""
        EXPERIMENT = Experiment(base=BASE, variants=[("a", {}), ("b", {}), ("c", {}), ("d", {})], seeds=3,
                                measures=[HeldOutBpb(multiples=(1, 2))], description="A test ablation.")
    """)
    return Context.load(path, scale="tiny", seeds=3, runs_dir=tmp_path / "runs")


def test_table_means_stds_findings_and_missing_runs(ctx, tmp_path):
    jobs = ctx.jobs()
    for job in jobs:
        if job.variant in BPB:
            _fake_run(job, BPB[job.variant][job.seed], None if job.variant == "c" else 3.0 + job.seed)
    d0 = next(j for j in jobs if j.variant == "d")
    _fake_run(d0, 1.5, 1.6, measured=False)  # trained, never measured: not averaged
    written = report.write(ctx, jobs, tmp_path / "out", "lmlab experiment x.py --scale tiny")
    md = (tmp_path / "out" / "tiny_ablation.md").read_text()
    assert written[:2] == [tmp_path / "out" / "tiny_ablation.md", tmp_path / "out" / "tiny_ablation.json"]

    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"variant", "a", "b", "c", "d"}
    for v in "abc":
        mean, std = np.mean(BPB[v]), np.std(BPB[v], ddof=1)
        assert f"{mean:.4f} ± {std:.4f}" in rows[v]
    # b is 0.1 below a, far beyond 2 x max std (0.02): a finding; c's spread (0.05) swallows its offset.
    assert rows["b"].split(" | ")[2].endswith("*") and not rows["c"].split(" | ")[2].endswith("*")
    assert "val_bpb -0.1000 (a finding: |difference| > 2 x seed std = 0.0200)" in md
    assert "c vs a: val_bpb -0.0017 (not a finding" in md
    assert rows["c"].split(" | ")[-1] == "n/a |"  # bpb@64 does not apply to c
    assert rows["d"].startswith("| d | 0 |") and "d/seed-0 (trained, not measured)" in md
    assert "d/seed-1 (not trained)" in md
    assert "- command: `lmlab experiment x.py --scale tiny`" in md and "n1: cpu (cpu, 1 device(s)), 2 CPUs" in md

    data = json.loads((tmp_path / "out" / "tiny_ablation.json").read_text())
    assert len(data["runs"]) == 12 and data["variants"] == ["a", "b", "c", "d"]
    run = next(r for r in data["runs"] if r["variant"] == "b" and r["seed"] == 2)
    assert run["metrics"]["bpb@64"] == 5.0 and run["config"]["seed"] == 2 and run["status"] == "finished"
    assert data["summary"]["a"]["bpb@64"] == {"mean": 4.0, "std": 1.0, "n": 3}


def test_one_seed_judges_nothing():
    one, three = report.mean_std([2.0]), report.mean_std([1.0, 1.1, 0.9])
    assert one == {"mean": 2.0, "std": None, "n": 1}
    assert report.finding(one, three) is None
    assert report.finding(three, report.mean_std([2.0, 2.1, 1.9])) is True
    assert report.finding(three, report.mean_std([1.15, 1.25, 1.05])) is False  # 0.15 <= 2 x 0.1


def test_report_only_from_nothing_writes_an_empty_table(ctx, tmp_path):
    report.write(ctx, ctx.jobs(), tmp_path / "out", "cmd")
    md = (tmp_path / "out" / "tiny_ablation.md").read_text()
    assert "| a | 0 |" in md and "machine: unknown" in md


def test_prerequisite_row_eval_metrics_and_a_derived_run(write_experiment, tmp_path):
    """The teacher is a row of its own below the variants (never judged against them), an
    eval.json key named in eval_metrics is a column, and a derived run counts once its command's
    eval.json is there (its step is its source's, whatever that is)."""
    path = write_experiment("""
        EXPERIMENT = Experiment(base=BASE, requires={"teacher": BASE}, eval_metrics=("eval/distill/kl",),
                                table=("val_bpb", "eval/distill/kl"),
                                variants=[("alone", {}), ("kd", {"distill.teacher": "{teacher}"}),
                                          ("int8", Derive("alone", ["quantize", "--weights", "int8"]))])
    """)
    ctx = Context.load(path, scale="tiny", seeds=2, runs_dir=tmp_path / "runs")
    jobs = ctx.jobs()
    for job, bpb in zip(jobs, [1.5, 2.0, 2.1, 1.8, 1.81, 2.02, 2.12]):
        _fake_run(job, bpb, bpb)
        if job.variant == "kd":
            summary = json.loads((job.run_dir / "eval.json").read_text())
            (job.run_dir / "eval.json").write_text(json.dumps({**summary, "eval/distill/kl": 0.25 + job.seed}))
        if job.kind == "derive":
            (job.run_dir / "eval.json").write_text(json.dumps({"step": 0, "val_bpb": bpb, "derived": list(job.derive)}))
    report.write(ctx, jobs, tmp_path / "out", "cmd")
    md = (tmp_path / "out" / "tiny_ablation.md").read_text()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    rows = {row[0]: row for row in cells}
    assert list(rows)[1:] == ["alone", "kd", "int8", "teacher (prerequisite)"]
    assert rows["variant"][3] == "eval/distill/kl"
    assert rows["teacher (prerequisite)"][1:3] == ["1", "1.5000"]  # one run, no std, no finding mark
    assert rows["kd"][2] == "1.8050 ± 0.0071 *" and rows["kd"][3] == "0.7500 ± 0.7071"
    assert rows["alone"][3] == "n/a" and rows["int8"][2].startswith("2.0700 ± 0.0707")
    assert "teacher vs" not in md
    data = json.loads((tmp_path / "out" / "tiny_ablation.json").read_text())
    assert data["prerequisites"] == ["teacher"]
    assert {r["variant"]: r["kind"] for r in data["runs"]} == {"teacher": "prerequisite", "alone": "train",
                                                               "kd": "train", "int8": "derive"}


def test_commit_is_marked_dirty_by_changed_code_not_by_regenerated_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "experiments" / "results" / "exp.md").write_text("old table\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    ctx = SimpleNamespace(root=tmp_path, scale="full")
    empty = SimpleNamespace(runs=[])
    (tmp_path / "experiments" / "results" / "exp.md").write_text("new table\n")
    clean = report.environment(ctx, "cmd", empty)["commit"]
    assert "uncommitted" not in clean and len(clean) >= 7
    (tmp_path / "code.py").write_text("x = 2\n")
    assert report.environment(ctx, "cmd", empty)["commit"] == clean + " (with uncommitted changes)"
