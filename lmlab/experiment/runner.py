"""Running an experiment's jobs: one worker process per (variant, seed), locally or as a SLURM array task.

A worker trains its run with `python -m lmlab.cli train ...` in a subprocess (a failure stays in
that run; an interrupted run resumes from its checkpoint when the same command runs again), then
takes the measurements still missing from the run's measurements.json. A run is finished when
its eval.json is at the configured final step and every measurement is there: the runner skips it.
A prerequisite is trained the same way from its own config file; a derived variant is made by its
`lmlab` command from its source run (again from scratch if it was cut short) and then evaluated
into its eval.json. Jobs run in waves (spec.levels): a run starts once every run it names is done.

The local executor and the SLURM array script run job I as
`python -m lmlab.experiment.worker EXPERIMENT.py --scale S --runs-dir DIR --job I [--seeds N]`.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lmlab.experiment.spec import Experiment, Job, experiment_dir, levels, load_experiment, plan

log = logging.getLogger("lmlab")

MEASUREMENTS = "measurements.json"


@dataclass(frozen=True)
class Context:
    """Where an experiment runs: its file, name, repository root, scale, seeds and runs directory."""

    path: pathlib.Path
    name: str
    experiment: Experiment
    root: pathlib.Path
    scale: str
    seeds: int | None
    runs_dir: pathlib.Path

    @classmethod
    def load(cls, path, *, scale: str, seeds: int | None, runs_dir) -> "Context":
        name, experiment, root = load_experiment(path)
        return cls(pathlib.Path(path).resolve(), name, experiment, root, scale, seeds, pathlib.Path(runs_dir).resolve())

    def jobs(self) -> list[Job]:
        return plan(self.experiment, self.name, self.root, scale=self.scale, seeds=self.seeds, runs_dir=self.runs_dir)

    def worker_command(self, index: int | str) -> list[str]:
        cmd = [sys.executable, "-m", "lmlab.experiment.worker", str(self.path), "--scale", self.scale,
               "--runs-dir", str(self.runs_dir), "--job", str(index)]
        return cmd + (["--seeds", str(self.seeds)] if self.seeds is not None else [])


def read_json(path: pathlib.Path):
    """A JSON file's content, or None when it is missing or torn (a run killed mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: pathlib.Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def trained(job: Job) -> bool:
    """Trained to the final step, or (a derived run) made by its command and evaluated."""
    summary = read_json(job.run_dir / "eval.json")
    if job.kind == "derive":
        return isinstance(summary, dict) and summary.get("derived") == list(job.derive)
    return isinstance(summary, dict) and summary.get("step") == job.config.train.steps


def finished(job: Job, experiment: Experiment) -> bool:
    measured = read_json(job.run_dir / MEASUREMENTS) or {}
    return trained(job) and all(m.name in measured for m in experiment.measures) and "host" in measured


def train_command(ctx: Context, job: Job) -> list[str]:
    return [sys.executable, "-m", "lmlab.cli", "train", str(ctx.root / job.config_file), "--workdir",
            str(job.run_dir), "--no-progress", "--no-samples", *(f"--config.{o}" for o in job.overrides)]


def host_record() -> dict:
    import jax  # here, not at the top: the runner process itself never needs JAX

    # The CPUs this process may run on (taskset), not the machine's count.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"node": platform.node(), "cpus": cpus, "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count()}


def measure(ctx: Context, job: Job) -> dict:
    """Takes the measurements job's run does not have yet; saves after each (a kill loses one)."""
    from lmlab.experiment.measure import finite_or_none
    from lmlab.runs import load_run

    path = job.run_dir / MEASUREMENTS
    measured = read_json(path) or {}
    missing = [m for m in ctx.experiment.measures if m.name not in measured]
    if missing or "host" not in measured:
        run = load_run(job.run_dir)
        for m in missing:
            t0 = time.perf_counter()
            measured[m.name] = {k: finite_or_none(v) for k, v in m(run).items()}
            log.info("%s: %s in %.1fs: %s", job.run_dir, m.name, time.perf_counter() - t0, measured[m.name])
            write_json(path, measured)
        measured["host"] = host_record()
        write_json(path, measured)
    return measured


def derive(ctx: Context, job: Job) -> int:
    """Makes a derived run with its command (`lmlab quantize SOURCE ... --out RUN`), then evaluates
    it as `lmlab eval` would and saves that as its eval.json (at the source's step)."""
    from lmlab.eval.run import evaluate_run
    from lmlab.runs import load_run

    if job.run_dir.exists():  # cut short before its eval.json: the command wants a new --out
        shutil.rmtree(job.run_dir)
    cmd = [sys.executable, "-m", "lmlab.cli", *job.derive]
    log.info("deriving %s/seed-%d: %s", job.variant, job.seed, " ".join(cmd[1:]))
    out = subprocess.run(cmd, cwd=ctx.root, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        log.error("deriving %s/seed-%d failed with exit status %d", job.variant, job.seed, out.returncode)
        return out.returncode
    printed = out.stdout.strip().splitlines()  # `lmlab quantize` prints its sizes and policy as JSON
    try:
        made = json.loads(printed[-1]) if printed else None
    except ValueError:
        made = printed[-1]
    run = load_run(job.run_dir)
    write_json(job.run_dir / "eval.json", {"step": run.step, **evaluate_run(run), "derived": list(job.derive),
                                           "derive_output": made})
    return 0


def run_job(ctx: Context, job: Job) -> int:
    """The worker: train (resuming whatever is there) or derive, then measure. Returns an exit status."""
    if job.kind == "derive" and not trained(job):
        rc = derive(ctx, job)
        if rc != 0:
            return rc
    elif not trained(job):
        cmd = train_command(ctx, job)
        log.info("training %s/seed-%d: %s", job.variant, job.seed, " ".join(cmd[1:]))
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ctx.root).returncode
        if rc != 0:
            log.error("training %s/seed-%d failed with exit status %d", job.variant, job.seed, rc)
            return rc
        log.info("trained %s/seed-%d in %.1fs", job.variant, job.seed, time.perf_counter() - t0)
        if not trained(job):
            log.error("training %s/seed-%d exited 0 but %s/eval.json is not at step %d", job.variant, job.seed,
                      job.run_dir, job.config.train.steps)
            return 1
    measure(ctx, job)
    return 0


def log_path(ctx: Context, job: Job) -> pathlib.Path:
    """Outside the run directory: a run that fails before its first checkpoint removes that."""
    name = job.variant if job.kind == "prerequisite" else f"{job.variant}-seed-{job.seed}"
    return experiment_dir(ctx.runs_dir, ctx.name, ctx.scale) / "logs" / f"{name}.log"


def waiting_on(job: Job, jobs: list[Job], outcome: dict[int, str]) -> str | None:
    """The outcome line of a job not started because a run it needs did not finish; None: it can start."""
    missing = [jobs[i] for i in job.after if outcome.get(i) not in ("done", "skipped")]
    if not missing:
        return None
    return "not started: it needs " + ", ".join(
        f"{j.variant}" + (f"/seed-{j.seed}" if j.kind != "prerequisite" else "") for j in missing) + ", not finished"


def run_local(ctx: Context, jobs: list[Job], n_parallel: int) -> dict[int, str]:
    """Runs the unfinished jobs wave by wave (spec.levels), `n_parallel` worker processes at a time.
    Returns {job index: 'done' | 'skipped' | failure line}. SIGINT/SIGTERM stop every worker."""
    outcome: dict[int, str] = {}
    for wave in levels(jobs):
        outcome.update(run_wave(ctx, jobs, wave, n_parallel, outcome))
    return outcome


def run_wave(ctx: Context, jobs: list[Job], wave: list[Job], n_parallel: int, before: dict[int, str]) -> dict[int, str]:
    outcome = {job.index: "skipped" for job in wave if finished(job, ctx.experiment)}
    for job in wave:
        if job.index not in outcome and (reason := waiting_on(job, jobs, before)):
            outcome[job.index] = reason
    todo = [job for job in wave if job.index not in outcome]
    procs: dict[int, subprocess.Popen] = {}
    stopping = []

    def work(job: Job) -> None:
        if stopping:
            outcome[job.index] = "not started (stopped)"
            return
        path = log_path(ctx, job)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            # Own session: a signal to the runner is passed on once, to the whole worker group.
            procs[job.index] = proc = subprocess.Popen(ctx.worker_command(job.index), cwd=ctx.root, stdout=out,
                                                       stderr=subprocess.STDOUT, start_new_session=True)
            rc = proc.wait()
        if rc == 0:
            outcome[job.index] = "done"
        elif stopping:
            outcome[job.index] = f"stopped (exit status {rc}); log: {path}"
        else:
            outcome[job.index] = f"failed (exit status {rc}); log: {path}"
        log.info("%s/seed-%d: %s", job.variant, job.seed, outcome[job.index])

    def stop(signum, _frame):
        stopping.append(signum)
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(max(1, n_parallel)) as pool:
            list(pool.map(work, todo))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        log.warning("stopped: the unfinished runs resume from their last checkpoint when the same command runs again")
        raise KeyboardInterrupt
    return outcome
