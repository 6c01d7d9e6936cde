"""Aggregating an experiment's runs into NAME.md (table), NAME.json (every run) and NAME.png (plot).

Each variant's metrics are the mean and sample standard deviation over its seeds. A difference
from the reference variant (the first) is called a finding only where it exceeds twice the seed
spread (the larger of the two standard deviations); with one seed nothing is. Prerequisites (a
distillation teacher) get rows of their own below the variants, never judged against them.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import pathlib
import subprocess
from dataclasses import dataclass, field

from lmlab.experiment.plots import per_variant
from lmlab.experiment.runner import MEASUREMENTS, Context, finished, read_json, trained
from lmlab.experiment.spec import Experiment, Job

log = logging.getLogger("lmlab")

TRAIN_METRICS = ("val_bpb", "val_loss", "params")  # from the run's eval.json


@dataclass
class Report:
    name: str
    scale: str
    variants: list[str]                      # table order; the first is the reference
    runs: list[dict]                         # one per job: variant, seed, run_dir, status, overrides, config, metrics
    columns: list[str]
    summary: dict = field(default_factory=dict)   # variant -> metric -> {"mean", "std", "n"}
    prerequisites: list[str] = field(default_factory=list)  # rows after the variants (trained once)

    @property
    def rows(self) -> list[str]:
        return [*self.variants, *self.prerequisites]

    def points(self, *metrics: str) -> tuple[list[float], ...]:
        """Every finished run's values of the metrics where it has them all (one point per seed),
        as one list per metric."""
        pts = [[r["metrics"][m] for m in metrics] for r in self.runs if r["status"] == "finished"
               and all(r["metrics"].get(m) is not None for m in metrics)]
        return tuple([p[i] for p in pts] for i in range(len(metrics)))

    def values(self, variant: str, metric: str) -> list[float]:
        return [r["metrics"][metric] for r in self.runs if r["variant"] == variant and r["status"] == "finished"
                and r["metrics"].get(metric) is not None]


def run_record(job: Job, experiment: Experiment) -> dict:
    """What one run contributes: its config, status and flat metrics (None where it has none)."""
    summary = read_json(job.run_dir / "eval.json") or {}
    measured = read_json(job.run_dir / MEASUREMENTS) or {}
    metrics = {k: summary.get(k) for k in (*TRAIN_METRICS, *experiment.eval_metrics) if k in summary}
    for m in experiment.measures:  # in the experiment's order: the table's default column order
        if isinstance(measured.get(m.name), dict):
            metrics.update(measured[m.name])
    status = ("finished" if finished(job, experiment) else "trained, not measured" if trained(job)
              else "not trained")
    # A derived run's config is what its command wrote (the plan only knows its source's).
    config = (read_json(job.run_dir / "config.json") if job.kind == "derive" else None) or job.config.to_dict()
    return {"variant": job.variant, "seed": job.seed, "kind": job.kind, "run_dir": str(job.run_dir),
            "status": status, "overrides": list(job.overrides), "derive": list(job.derive), "config": config,
            "metrics": metrics,
            "host": measured.get("host")}


def mean_std(values: list[float]) -> dict:
    n = len(values)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def finding(a: dict, b: dict) -> bool | None:
    """Whether mean a differs from mean b by more than twice the larger seed std; None: undecidable."""
    if a["n"] < 2 or b["n"] < 2:
        return None
    return abs(a["mean"] - b["mean"]) > 2 * max(a["std"], b["std"])


def build(ctx: Context, jobs: list[Job]) -> Report:
    variants = [name for name, _ in ctx.experiment.variants]
    runs = [run_record(job, ctx.experiment) for job in jobs]
    seen: list[str] = []
    for r in runs:
        seen += [k for k in r["metrics"] if k not in seen]
    columns = list(ctx.experiment.table) or seen
    report = Report(ctx.name, ctx.scale, variants, runs, columns, prerequisites=list(ctx.experiment.requires))
    report.summary = {v: {c: mean_std(report.values(v, c)) for c in seen} for v in report.rows}
    return report


def _number(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def _cell(stat: dict, reference: dict | None) -> str:
    if stat["n"] == 0:
        return "n/a"
    if stat["std"] == 0 and (reference is None or reference["std"] in (0, None)):
        return _number(stat["mean"])  # the same for every seed (a size): exact, no noise to judge against
    text = _number(stat["mean"]) + (f" ± {_number(stat['std'])}" if stat["std"] is not None else "")
    return text + (" *" if reference is not None and finding(stat, reference) else "")


def table_markdown(report: Report) -> str:
    ref = report.variants[0]
    lines = ["| variant | seeds | " + " | ".join(report.columns) + " |",
             "|---|---|" + "---|" * len(report.columns)]
    for v in report.rows:
        seeds = max((report.summary[v].get(c, {"n": 0})["n"] for c in report.columns), default=0)
        judged = v != ref and v in report.variants
        cells = [_cell(report.summary[v].get(c, mean_std([])), report.summary[ref].get(c) if judged else None)
                 for c in report.columns]
        label = f"{v} (prerequisite)" if v in report.prerequisites else v
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings_markdown(report: Report, primary: str) -> str:
    ref = report.variants[0]
    lines = []
    for v in report.variants[1:]:
        a, b = report.summary[v].get(primary), report.summary[ref].get(primary)
        if not a or not b or a["n"] == 0 or b["n"] == 0:
            continue
        diff = a["mean"] - b["mean"]
        verdict = finding(a, b)
        spread = None if verdict is None else 2 * max(a["std"], b["std"])
        judged = ("not judged: fewer than 2 seeds" if verdict is None else
                  f"{'a finding' if verdict else 'not a finding'}: |difference| "
                  f"{'>' if verdict else '<='} 2 x seed std = {spread:.4f}")
        lines.append(f"- {v} vs {ref}: {primary} {diff:+.4f} ({judged})")
    return "\n".join(lines)


def environment(ctx: Context, command: str, report: Report) -> dict:
    def git(*args) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ctx.root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # Changed code marks the commit; changed result files (this very report, regenerated) do not.
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude,glob)**/results/**"):
        commit += " (with uncommitted changes)"
    hosts = sorted({f"{h['node']}: {h['device_kind']} ({h['backend']}, {h['device_count']} device(s)), "
                    f"{h['cpus']} CPUs" for r in report.runs if (h := r.get("host"))})
    return {"command": command, "commit": commit, "scale": ctx.scale,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": "; ".join(hosts) or "unknown (no run measured yet)"}


def write(ctx: Context, jobs: list[Job], out_dir: pathlib.Path, command: str) -> list[pathlib.Path]:
    """Writes NAME.md, NAME.json and (with matplotlib) NAME.png into out_dir; returns their paths."""
    report = build(ctx, jobs)
    env = environment(ctx, command, report)
    analysis_md, analysis = "", None
    if ctx.experiment.analyze is not None:
        analysis_md, analysis = ctx.experiment.analyze(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = (out_dir / f"{ctx.name}.{ext}" for ext in ("md", "json", "png"))
    md.write_text(markdown(ctx, report, env, analysis_md))
    js.write_text(json.dumps({"experiment": ctx.name, **env, "variants": report.variants,
                              "prerequisites": report.prerequisites, "summary": report.summary, "analysis": analysis, "runs": report.runs},
                             indent=1, sort_keys=False) + "\n")
    written = [md, js]
    try:
        import matplotlib  # optional: the table and JSON do not need it
    except ImportError:
        log.warning("matplotlib is not installed: no %s (pip install 'lmlab[plot]')", png)
    else:
        matplotlib.use("Agg")
        (ctx.experiment.plot or per_variant((ctx.experiment.primary,)))(report, png)
        written.append(png)
    return written


def markdown(ctx: Context, report: Report, env: dict, analysis_md: str) -> str:
    e = ctx.experiment
    missing = [r for r in report.runs if r["status"] != "finished"]
    parts = [f"# {ctx.name}", e.description.strip(),
             "\n".join([f"- command: `{env['command']}`", f"- commit: {env['commit']}", f"- date: {env['date']}",
                        f"- machine: {env['machine']}", f"- scale: {ctx.scale}; base config: {e.base}"]),
             table_markdown(report),
             f"Mean ± sample std over seeds. `*`: differs from the reference ({report.variants[0]}) by more than "
             "twice the seed spread (the larger std), i.e. a finding; anything else is within noise. "
             "n/a: not measured or does not apply.",
             findings_markdown(report, e.primary)]
    if analysis_md:
        parts.append(analysis_md.strip())
    if missing:
        parts.append("Runs not finished (not in the table): " + ", ".join(
            f"{r['variant']}/seed-{r['seed']} ({r['status']})" for r in missing))
    return "\n\n".join(p for p in parts if p) + "\n"
