"""metrics.jsonl (one JSON object per logged step) and TensorBoard events in the run directory."""

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


class MetricsWriter:
    def __init__(self, run_dir: pathlib.Path, *, resume_step: int = 0, tensorboard: bool = True):
        self.path = pathlib.Path(run_dir) / "metrics.jsonl"
        # A resumed run replays the steps after its checkpoint: drop the lines the dead run wrote
        # past it, so the file reads as one uninterrupted run.
        if self.path.exists():
            lines = [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
            records = [_record(line) for line in lines]
            if None in records:
                log.warning("%s: dropped %d unreadable line(s)", self.path, records.count(None))
            kept = [line for line, record in zip(lines, records)
                    if record is not None and record.get("step", 0) <= resume_step]
            with atomic_write(self.path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(run_dir) / "tb"), flush_secs=10, purge_step=resume_step + 1)

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


def read_metrics(run_dir) -> list[dict]:
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
