import pathlib
import subprocess
import sys

import pytest

from lmlab import cli
from lmlab.config import ConfigError
from lmlab.experiment.spec import TINY, format_value, levels, load_experiment, plan

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "gpt_shakespeare.py"  # the experiment files' base (conftest.py)


def test_plan_orders_overrides_and_resolves_every_run(write_experiment, tmp_path):
    path = write_experiment("""
        EXPERIMENT = Experiment(base=BASE, common={"model.max_len": 512},
            variants=[("a", {"model.positions": "alibi"}), ("b", {"model.positions": "learned", "model.max_len": 128})],
            tiny={**TINY, "model.n_heads": 4}, tiny_variants={"b": {"model.max_len": 32}}, seeds=3, tiny_seeds=2)
    """)
    name, experiment, root = load_experiment(path)
    assert (name, root) == ("tiny_ablation", tmp_path)
    full = plan(experiment, name, root, scale="full", seeds=None, runs_dir=tmp_path / "runs")
    assert [(j.variant, j.seed) for j in full] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert full[4].run_dir == tmp_path / "runs" / "tiny_ablation" / "b" / "seed-1"
    assert (full[0].config.model.max_len, full[3].config.model.max_len, full[4].config.seed) == (512, 128, 1)
    assert full[0].config.data.seq_len == 128 and full[0].config.model.n_heads == 4  # the base's
    tiny = plan(experiment, name, root, scale="tiny", seeds=None, runs_dir=tmp_path / "runs")
    assert len(tiny) == 4 and tiny[0].run_dir.parent.parent.name == "tiny_ablation-tiny"
    a, b = tiny[0].config, tiny[2].config
    # common, then tiny, then the variant, then tiny_variants: TINY's max_len loses to neither variant's
    # positions but b's own tiny max_len wins over its full-scale one.
    assert (a.model.positions, a.model.max_len, a.data.seq_len, a.model.n_heads) == ("alibi", 256, 32, 4)
    assert (b.model.positions, b.model.max_len) == ("learned", 32)
    assert "model.positions=learned" in tiny[2].overrides and tiny[2].overrides[-1] == "seed=0"
    assert len(plan(experiment, name, root, scale="tiny", seeds=1, runs_dir=tmp_path)) == 2


def test_prerequisites_placeholders_and_derived_variants(write_experiment, tmp_path):
    """A prerequisite is one run before the variants (the config's own seed; at full scale no
    overrides at all, so a run trained by hand with the same command counts); placeholders become
    run directories of the same seed, and the runs they name come first."""
    path = write_experiment("""
        EXPERIMENT = Experiment(base=BASE, requires={"teacher": BASE}, seeds=2,
            variants=[("alone", {}), ("kd", {"distill.teacher": "{teacher}", "distill.alpha": 0.9}),
                      ("ft", {"train.init_from": "{alone}"}), ("q", Derive("alone", ["quantize", "--weights", "int8"]))],
            tiny_variants={"teacher": {"model.d_model": 64}})
    """)
    name, experiment, root = load_experiment(path)
    runs = tmp_path / "runs"
    exp = runs / name
    jobs = plan(experiment, name, root, scale="full", seeds=None, runs_dir=runs)
    assert [(j.kind, j.variant, j.seed) for j in jobs] == [("prerequisite", "teacher", 0)] + [
        ("derive" if v == "q" else "train", v, s) for v in ("alone", "kd", "ft", "q") for s in (0, 1)]
    teacher = jobs[0]
    assert (teacher.run_dir, teacher.overrides, teacher.config_file, teacher.after) == (exp / "teacher", (), str(BASE), ())
    kd, ft, q = jobs[4], jobs[6], jobs[8]  # seed 1 of each
    assert kd.config.distill.teacher == str(exp / "teacher") and kd.after == (0,) and kd.config.seed == 1
    assert ft.config.train.init_from == str(exp / "alone" / "seed-1") and ft.after == (2,)
    assert q.derive == ("quantize", str(exp / "alone" / "seed-1"), "--weights", "int8", "--out", str(exp / "q" / "seed-1"))
    assert q.after == (2,) and q.config.to_dict() == jobs[2].config.to_dict()  # its source's, until it is made
    assert [[j.index for j in wave] for wave in levels(jobs)] == [[0, 1, 2], [3, 4, 5, 6, 7, 8]]
    tiny = plan(experiment, name, root, scale="tiny", seeds=1, runs_dir=runs)
    assert tiny[0].run_dir == runs / f"{name}-tiny" / "teacher"
    assert tiny[0].config.model.d_model == 64 and tiny[1].config.model.d_model == TINY["model.d_model"]
    assert tiny[0].config.data.corpus == tiny[1].config.data.corpus == "shakespeare_tiny"
    assert tiny[2].config.distill.teacher == str(runs / f"{name}-tiny" / "teacher")


def test_values_format_as_the_command_line_parses_them():
    assert [format_value(v) for v in (True, False, 3, 2.5e-3, "rope", ("a", "b"))] == [
        "true", "false", "3", "0.0025", "rope", "('a', 'b')"]


@pytest.mark.parametrize("body, words", [
    ("EXPERIMENT = Experiment(base=BASE, variants=[])", "has no variants"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {'model.positoins': 'rope'})])",
     "variant 'a': unknown config key 'model.positoins'"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {}), ('b', {}), ('a', {'seed': 1})])",
     "variant name 'a' is used twice"),
    ("EXPERIMENT = Experiment(base=BASE, variants={'a': {}})", "not a dict"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a/b', {})])", "variant name 'a/b'"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {})], tiny_variants={'c': {}})", "'c', which is not a variant"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {'model.n_kv_heads': 3})])", "'model.n_kv_heads'"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {})], tiny_seeds=0)", "tiny_seeds must be a positive integer"),
    ("EXPERIMENT = 3", "must define EXPERIMENT"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {'train.init_from': '{teachr}'})], "
     "requires={'teacher': BASE})", "variant 'a': placeholder '{teachr}' names no prerequisite or other variant"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {}), ('q', Derive('b', ['quantize']))])",
     "derived variant 'q' comes from 'b', which is not a trained variant"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {})], requires={'a': BASE})", "variant name 'a' is used twice"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('logs', {})])", "variant name 'logs'"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {'train.init_from': '{b}'}), "
     "('b', {'train.init_from': '{a}'})])", "variants wait for each other's runs: a -> b -> a"),
    ("EXPERIMENT = Experiment(base=BASE, variants=[('a', {}), ('q', Derive('a', ['quantize']))], "
     "tiny_variants={'q': {}})", "tiny_variants names 'q', which is not a variant"),
    ("import nonexistent_module_xyz", "ModuleNotFoundError"),
])
def test_bad_experiment_files_are_one_line_exit_2(write_experiment, tmp_path, capsys, body, words):
    path = write_experiment(body)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _, experiment, root = load_experiment(path)
        plan(experiment, "x", root, scale="full", seeds=None, runs_dir=tmp_path)
    assert cli.main(["experiment", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_slurm_executor_without_sbatch_is_exit_2(write_experiment, tmp_path, monkeypatch, capsys):
    path = write_experiment("EXPERIMENT = Experiment(base=BASE, variants=[('a', {})])")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch anywhere
    assert cli.main(["experiment", str(path), "--executor", "slurm", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == ("lmlab: error: --executor slurm needs SLURM's sbatch on PATH, and it is not there "
                   "(use --executor local, or run on a SLURM login node)\n")


@pytest.mark.parametrize("args, words", [
    (["--jobs", "0"], "need --jobs >= 1"),
    (["--seeds", "0"], "need --seeds >= 1"),
    (["--sbatch", "partition"], "--sbatch takes KEY=VALUE"),
])
def test_bad_arguments_are_exit_2(write_experiment, tmp_path, capsys, args, words):
    path = write_experiment("EXPERIMENT = Experiment(base=BASE, variants=[('a', {})])")
    assert cli.main(["experiment", str(path), "--runs-dir", str(tmp_path / "runs"), *args]) == 2
    assert words in capsys.readouterr().err


def test_missing_experiment_file_through_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lmlab.cli", "experiment", str(tmp_path / "nope.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"lmlab: error: experiment file not found (a .py file defining "
                                               f"EXPERIMENT): {tmp_path / 'nope.py'}"]
