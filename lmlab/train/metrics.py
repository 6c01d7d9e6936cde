"""metrics.jsonl (one JSON object per logged step) and TensorBoard events in the run directory.

Periodic evaluations (every train.eval_every steps, on train.eval_batches batches) log `val_*`;
the end-of-run evaluation on the whole held-out split (eval.json) logs the same metrics as
`final_val_*` at the last step, so the two can be told apart in both places.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib

from lmlab.files import atomic_write

log = logging.getLogger("lmlab")


def _record(line: str) -> dict | None:
    """One metrics.jsonl line, or None for a torn or garbled one (a killed run's last write)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(record, dict) and isinstance(record.get("step", 0), int)
    return record if ok else None


FINAL_PREFIX = "final_"


def _is_final(record: dict) -> bool:
    return any(key.startswith(FINAL_PREFIX) for key in record)


class MetricsWriter:
    def __init__(self, run_dir: pathlib.Path, *, resume_step: int | None = 0, tensorboard: bool = True,
                 tb_suffix: str = ""):
        """resume_step None: append to what is there (no trimming, no TensorBoard purge). tb_suffix
        ends the event file's name: a second writer in the same second would otherwise replace
        the first one's file (the name is the time in seconds and the host)."""
        self.path = pathlib.Path(run_dir) / "metrics.jsonl"
        # A resumed run replays the steps after its checkpoint: drop the lines the dead run wrote
        # past it, so the file reads as one uninterrupted run.
        if resume_step is not None and self.path.exists():
            lines = [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
            records = [_record(line) for line in lines]
            if None in records:
                log.warning("%s: dropped %d unreadable line(s)", self.path, records.count(None))
            # A final evaluation belongs to the run that ended there; a resumed run writes its own.
            kept = [line for line, record in zip(lines, records)
                    if record is not None and record.get("step", 0) <= resume_step and not _is_final(record)]
            with atomic_write(self.path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(run_dir) / "tb"), flush_secs=10, filename_suffix=tb_suffix,
                                     purge_step=None if resume_step is None else resume_step + 1)

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class MetricWindow:
    """Running means of named per-step values between two logged steps."""

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, values: dict) -> None:
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def pop_means(self) -> dict[str, float]:
        means = {key: total / self._count for key, total in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means


def write_final_metrics(run_dir: pathlib.Path, step: int, metrics: dict, *, tensorboard: bool = True) -> None:
    """The end-of-run (whole held-out split) metrics as `final_<name>` at `step`: one metrics.jsonl
    line and TensorBoard scalars, after the periodic `val_*` values of the same step."""
    numbers = {FINAL_PREFIX + key: value for key, value in metrics.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    writer = MetricsWriter(run_dir, resume_step=None, tensorboard=tensorboard, tb_suffix=".final")
    try:
        writer.write(step, numbers)
    finally:
        writer.close()


def read_metrics(run_dir) -> list[dict]:
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
