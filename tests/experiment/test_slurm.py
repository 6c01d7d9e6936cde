"""The SLURM executor against a real cluster (.ci/slurm_up.sh): one sbatch job array, a finished
run in the table, a failed array task named with its log."""

import json
import pathlib
import re
import textwrap

import pytest

from lmlab import cli

BASE = pathlib.Path(__file__).resolve().parents[2] / "configs" / "gpt_shakespeare.py"


def test_experiment_runs_as_a_job_array(slurm_cluster, tmp_path, capsys):
    path = tmp_path / "experiments" / "slurm_ablation.py"
    path.parent.mkdir()
    path.write_text(f"from lmlab.experiment import Experiment, Size\nBASE = {str(BASE)!r}\n" + textwrap.dedent("""
        EXPERIMENT = Experiment(base=BASE, variants=[("ok", {}), ("broken", {"data.corpus": "no_such_corpus"})],
                                tiny_seeds=1, measures=[Size()], slurm={"cpus-per-task": 1})
    """))
    runs = tmp_path / "runs"
    rc = cli.main(["experiment", str(path), "--scale", "tiny", "--executor", "slurm", "--runs-dir", str(runs)])
    out, err = capsys.readouterr()
    assert rc == 1
    exp = runs / "slurm_ablation-tiny"
    script = (exp / "slurm" / "array.sh").read_text()
    assert "#SBATCH --array=0,1\n" in script and "#SBATCH --cpus-per-task=1\n" in script
    job_id = json.loads((exp / "slurm" / "active.json").read_text())["job_id"]

    failed = [line for line in err.splitlines() if line.startswith("lmlab: run failed")]
    log = exp / "logs" / f"slurm-{job_id}_1.log"
    assert failed == [f"lmlab: run failed (SLURM array task {job_id}_1: FAILED, exit code 1:0); log: {log}"]
    assert "no_such_corpus" in log.read_text()
    assert json.loads(out.strip().splitlines()[-1])["failed"] == 1

    md = (exp / "results" / "slurm_ablation.md").read_text()
    assert re.search(r"^\| ok \| 1 \| \d\.\d{4} \|", md, re.M) and "| broken | 0 |" in md
    assert "broken/seed-0 (not trained)" in md
    assert (exp / "ok" / "seed-0" / "measurements.json").exists()


@pytest.mark.slow  # the waves themselves are tested locally (tests/experiment/test_runner.py); this adds sbatch's
def test_a_prerequisite_is_an_array_of_its_own_before_the_runs_that_need_it(slurm_cluster, tmp_path, capsys):
    path = tmp_path / "experiments" / "slurm_waves.py"
    path.parent.mkdir()
    path.write_text(f"from lmlab.experiment import Experiment, Size\nBASE = {str(BASE)!r}\n" + textwrap.dedent("""
        EXPERIMENT = Experiment(base=BASE, requires={"start": BASE}, variants=[("ft", {"train.init_from": "{start}"})],
                                tiny_seeds=1, measures=[Size()], slurm={"cpus-per-task": 1})
    """))
    runs = tmp_path / "runs"
    rc = cli.main(["experiment", str(path), "--scale", "tiny", "--executor", "slurm", "--runs-dir", str(runs)])
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    exp = runs / "slurm_waves-tiny"
    arrays = {p.name.split("-")[1].split("_")[0] for p in (exp / "logs").glob("slurm-*.log")}
    assert len(arrays) == 2  # one job array per wave: the prerequisite's, then the variant's
    assert f"from {exp / 'start'}" in (exp / "logs" / f"slurm-{max(arrays, key=int)}_1.log").read_text()
    md = (exp / "results" / "slurm_waves.md").read_text()
    assert re.search(r"^\| ft \| 1 \| \d\.\d{4} \|", md, re.M) and re.search(r"^\| start \(prerequisite\) \| 1 \|", md, re.M)
