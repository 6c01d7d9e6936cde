"""`--executor slurm`: an experiment's unfinished runs as one sbatch job array, followed to the end.

Each array task runs the same worker as the local executor (`python -m lmlab.experiment.runner
... --job slurm`, which reads SLURM_ARRAY_TASK_ID), with this interpreter, from the repository
root, logging to <experiment>/logs/slurm-JOB_TASK.log. The job is followed with squeue and, once
it has left the queue, judged by what the runs wrote (finished or not) and by `scontrol show job`
(state, exit code) while slurmctld still remembers it; accounting (sacct) needs slurmdbd, which
a small cluster often lacks. The submitted job id is kept in <experiment>/slurm/active.json: the
same command run again while that job is queued follows it instead of submitting the runs twice.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import time

from lmlab.config import ConfigError
from lmlab.experiment.runner import Context, finished, read_json, write_json
from lmlab.experiment.spec import Job, experiment_dir

log = logging.getLogger("lmlab")

POLL_SECONDS = 2.0


class SlurmError(OSError):
    """SLURM refused or failed a command (sbatch, squeue); the message carries its stderr. An
    OSError: the CLI reports it in one line with exit status 1, like other system failures."""


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm needs SLURM's sbatch on PATH, and it is not there "
                          "(use --executor local, or run on a SLURM login node)")


def _slurm(*args: str, timeout: float = 60) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {timeout:.0f}s (is slurmctld up?)") from None
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(args[:2])} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def array_script(ctx: Context, todo: list[Job], n_parallel: int, options: dict) -> str:
    exp_dir = experiment_dir(ctx.runs_dir, ctx.name, ctx.scale)
    indices = ",".join(str(job.index) for job in todo) + (f"%{n_parallel}" if n_parallel else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=lmlab-{ctx.name}", f"#SBATCH --array={indices}",
             f"#SBATCH --output={exp_dir / 'logs' / 'slurm-%A_%a.log'}", f"#SBATCH --chdir={ctx.root}"]
    lines += [f"#SBATCH --{key}={value}" for key, value in options.items()]
    lines += ["# one (variant, seed) run per array task: train it (resuming), then measure it",
              "exec " + shlex.join(ctx.worker_command("slurm"))]
    return "\n".join(lines) + "\n"


def submit(ctx: Context, todo: list[Job], n_parallel: int, options: dict) -> str:
    slurm_dir = experiment_dir(ctx.runs_dir, ctx.name, ctx.scale) / "slurm"
    (slurm_dir.parent / "logs").mkdir(parents=True, exist_ok=True)
    slurm_dir.mkdir(parents=True, exist_ok=True)
    script = slurm_dir / "array.sh"
    script.write_text(array_script(ctx, todo, n_parallel, options))
    job_id = _slurm("sbatch", "--parsable", str(script)).strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {job_id!r}, not a job id")
    write_json(slurm_dir / "active.json", {"job_id": job_id, "tasks": [job.index for job in todo]})
    log.info("submitted %d run(s) as SLURM array job %s (%s)", len(todo), job_id, script)
    return job_id


def queued(job_id: str) -> dict[str, str]:
    """{task id: state} of the job's array tasks still in the queue (pending ones may be one line
    like 12_[3-5]); {} once the job has left it."""
    try:
        out = _slurm("squeue", "-h", "-j", job_id, "-o", "%i %T")
    except SlurmError as e:
        if "Invalid job id" in str(e):  # purged from the controller: gone
            return {}
        raise
    return dict(line.split()[:2] for line in out.splitlines() if line.strip())


def task_states(job_id: str) -> dict[int, tuple[str, str]]:
    """{array task: (state, exit code)} from scontrol, for as long as slurmctld keeps the job."""
    try:
        out = _slurm("scontrol", "show", "job", "-o", job_id)
    except SlurmError:
        return {}
    states = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if "ArrayTaskId" in fields and fields["ArrayTaskId"].isdigit():
            states[int(fields["ArrayTaskId"])] = (fields.get("JobState", "?"), fields.get("ExitCode", "?"))
    return states


def follow(job_id: str) -> None:
    last = None
    while tasks := queued(job_id):
        summary = ", ".join(f"{n} {state.lower()}" for state, n in
                            sorted({s: list(tasks.values()).count(s) for s in tasks.values()}.items()))
        if summary != last:
            log.info("SLURM job %s: %s", job_id, summary)
            last = summary
        time.sleep(POLL_SECONDS)


def run_slurm(ctx: Context, jobs: list[Job], n_parallel: int, options: dict) -> dict[int, str]:
    """Submits (or re-follows) the unfinished jobs as one array; returns {job index: outcome}."""
    require_sbatch()
    outcome = {job.index: "skipped" for job in jobs if finished(job, ctx.experiment)}
    todo = [job for job in jobs if job.index not in outcome]
    if not todo:
        return outcome
    active = read_json(experiment_dir(ctx.runs_dir, ctx.name, ctx.scale) / "slurm" / "active.json")
    if active and queued(active["job_id"]):
        job_id = active["job_id"]
        log.info("SLURM job %s of this experiment is still queued: following it instead of submitting again", job_id)
    else:
        job_id = submit(ctx, todo, n_parallel, {**ctx.experiment.slurm, **options})
    try:
        follow(job_id)
    except KeyboardInterrupt:
        log.warning("stopped following SLURM job %s; it keeps running (scancel %s stops it); the same command "
                    "follows it again and then reports", job_id, job_id)
        raise
    states = task_states(job_id)
    logs = experiment_dir(ctx.runs_dir, ctx.name, ctx.scale) / "logs"
    for job in todo:
        if finished(job, ctx.experiment):
            outcome[job.index] = "done"
            continue
        state, code = states.get(job.index, ("unknown", "?"))
        outcome[job.index] = (f"failed (SLURM array task {job_id}_{job.index}: {state}, exit code {code}); "
                              f"log: {logs / f'slurm-{job_id}_{job.index}.log'}")
    return outcome


def parse_options(items: list[str]) -> dict:
    """`--sbatch KEY=VALUE` flags -> {KEY: VALUE} (e.g. partition=gpu, time=02:00:00, gpus-per-task=1)."""
    options = {}
    for item in items:
        key, sep, value = item.removeprefix("--").partition("=")
        if not sep or not key:
            raise ConfigError(f"--sbatch takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        options[key] = value
    return options
