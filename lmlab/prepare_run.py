"""`lmlab prepare CONFIG`: the run's tokenizer and token files, made once, before (or without) training.

It does what the first `lmlab train` of the run would do before its first step (lmlab.data.prepare:
corpus, filters, tokenizer, token files on every core, manifest) and records the config, so the
training command that follows finds the files and reuses them, and one with other data or tokenizer
settings is refused, as a resume would be. A failure on a new run directory removes it again.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import time

from lmlab import config as config_lib
from lmlab.data.prepare import MANIFEST
from lmlab.tasks import get_task
from lmlab.train import rundir_lock
from lmlab.train.loop import check_resume_compatible

log = logging.getLogger("lmlab")


def prepare_run(config, run_dir: str | pathlib.Path) -> dict:
    """Prepares `run_dir` for `config`; returns a summary (the manifest's counts, where the task writes one)."""
    run_dir = pathlib.Path(run_dir)
    fresh = not run_dir.exists() or (run_dir.is_dir() and not any(p.name != rundir_lock.LOCK_NAME
                                                                  for p in run_dir.iterdir()))
    task = get_task(config)  # a task/family mismatch is refused before anything is written
    with rundir_lock.hold(run_dir):
        try:
            if (run_dir / "config.json").exists():
                check_resume_compatible(config_lib.load_run_config(run_dir), config, run_dir)
            t0 = time.time()
            data = task.prepare(run_dir)
            config_lib.save(config, run_dir)
        except BaseException:
            if fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
                log.info("removed what this failed prepare wrote to %s", run_dir)
            raise
    summary = {"run_dir": str(run_dir), "seconds": round(time.time() - t0, 2),
               "vocab_size": data.tokenizer.vocab_size}
    manifest_path = run_dir / "data" / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        summary["sources"] = {source["label"] or source["corpus"]: {
            split: {key: source[split][key] for key in ("documents", "bytes", "tokens")} for split in ("train", "val")}
            for source in manifest["sources"]}
        summary["removed"] = {source["label"] or source["corpus"]: source["removed"] for source in manifest["sources"]}
    return summary
