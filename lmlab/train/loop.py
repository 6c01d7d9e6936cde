"""The training loop: prepare data, build or restore the state, run jitted chunks, evaluate, save.

Reads top to bottom. Everything the run needs to continue lives in the run directory; running the
same command again resumes from the newest readable checkpoint and reproduces the losses of an
uninterrupted run exactly.

Several processes (multi-host, lmlab.distributed.initialize_distributed) run this same function:
all of them compute and checkpoint; process 0 alone prepares the data first, writes the config,
metrics, progress and summary.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import shutil
import signal
import time
from dataclasses import dataclass

import jax
import numpy as np
from tqdm import tqdm

from lmlab import config as config_lib
from lmlab import distributed
from lmlab import sharding
from lmlab.models import count_params
from lmlab.models.quantize import describe as describe_quant
from lmlab.tasks import get_task
from lmlab.train import frozen as frozen_lib
from lmlab.train import rundir_lock
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.init_from import load_init_params
from lmlab.train.inputs import train_inputs
from lmlab.train.metrics import MetricsWriter, MetricWindow, write_final_metrics
from lmlab.train.optimizer import make_schedule
from lmlab.train.state import full_params, init_state, uses_lora
from lmlab.train.step import TRAINER_METRICS, make_train_chunk

log = logging.getLogger("lmlab")

# Sections that fix what a checkpoint means; the train/sample sections may change between resumes.
_FROZEN_SECTIONS = ("seed", "task", "data", "tokenizer", "model", "lora")


class NonFiniteLossError(RuntimeError):
    pass


class _NoMetrics:
    """Processes other than 0 compute the same metrics and write none."""

    def write(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class Interrupted(Exception):
    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved")
        self.signum, self.step = signum, step


def check_resume_compatible(saved, config, run_dir) -> None:
    """Refuses to resume a run whose data, tokenizer or model would differ from its checkpoints."""
    was, now = config_lib.flatten(saved.to_dict()), config_lib.flatten(config.to_dict())
    differ = [key for key in sorted(set(was) | set(now))
              if key.split(".")[0] in _FROZEN_SECTIONS and was.get(key) != now.get(key)]
    if differ:  # every one, so a single corrected command resumes
        changes = ", ".join(f"{key}={was.get(key)!r} (this command: {now.get(key)!r})" for key in differ)
        raise config_lib.ConfigError(f"run directory {run_dir} was created with {changes}; use another --workdir "
                                     "to start a new run")
    clip_was, clip_now = was.get("train.grad_clip", 0), now.get("train.grad_clip", 0)
    if (clip_was > 0) != (clip_now > 0):  # clipping on/off changes the optimizer state's layout
        raise config_lib.ConfigError(
            f"run directory {run_dir} was trained with train.grad_clip={clip_was!r}, this command asks for "
            f"{clip_now!r}; gradient clipping cannot be switched on or off when resuming (another positive "
            "value can be set); use another --workdir to start a new run")


def _chunk_size(config, start_step: int) -> int:
    """Steps per jitted call, chosen to land exactly on every eval / checkpoint / final step."""
    t = config.train
    k = math.gcd(t.steps_per_call, t.eval_every, t.checkpoint_every, t.steps)
    return math.gcd(k, start_step) if start_step else k


def train(config, run_dir: str | pathlib.Path, *, progress: bool = True) -> dict:
    """Trains (or resumes) the run in `run_dir`; returns the final evaluation summary.

    The run directory is locked for the call (lmlab.train.rundir_lock): a second `train` on it
    raises RunDirBusy before touching anything. A run directory this call starts afresh is removed
    again when the run fails before its first checkpoint, for any reason (an unknown corpus, out of
    memory at the first step, Ctrl-C while compiling), so that the corrected command starts a new
    run instead of being refused as a resume with different settings.
    """
    run_dir = pathlib.Path(run_dir)
    existed = run_dir.exists()
    fresh = not existed or (run_dir.is_dir() and not any(p.name != rundir_lock.LOCK_NAME for p in run_dir.iterdir()))
    distributed.initialize_distributed()  # the lock is process 0's
    with rundir_lock.hold(run_dir):
        try:
            return _train(config, run_dir, progress=progress)
        except BaseException:
            checkpoints = run_dir / "checkpoints"
            if fresh and distributed.is_primary() and not (checkpoints.is_dir() and any(checkpoints.iterdir())):
                shutil.rmtree(run_dir, ignore_errors=True)
                if existed:
                    run_dir.mkdir(exist_ok=True)  # it was there, empty, before this call
                log.info("removed what this failed run wrote to %s", run_dir)
            raise


@dataclass
class _Run:
    """What the loop works with once the run directory, data, state and frozen models are ready."""
    task: object
    data: object
    model: object
    graphdef: object
    tx: object
    state: dict
    mesh: object
    frozen: dict
    checkpointer: Checkpointer
    start_step: int
    best_val: float
    resumed: bool


def _open_run(config, run_dir: pathlib.Path, primary: bool) -> _Run:
    """Checks a resume, saves the config, prepares the data, builds or restores the state (or
    starts from train.init_from) and loads the frozen models."""
    task = get_task(config)  # a task/family mismatch is refused before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.json").exists():
        check_resume_compatible(config_lib.load_run_config(run_dir), config, run_dir)
    mesh = sharding.make_mesh(config.get("mesh"))
    sharding.check_batch(config, mesh)
    distributed.sync("lmlab_config_checked")  # every process has read the old config before it is replaced
    if primary:
        config_lib.save(config, run_dir)

    data = distributed.primary_first(lambda: task.prepare(run_dir))
    model, graphdef, tx, state = init_state(config, data.tokenizer.vocab_size, mesh)
    if mesh.size > 1:
        log.info("mesh: %s", sharding.describe(mesh))
    n_params, n_trained = count_params(model), sum(x.size for x in jax.tree.leaves(state["params"]))
    log.info("task: %s, model: %s, %.2fM parameters, %s trained (%.2f%%)", config.task, config.model.family,
             n_params / 1e6, f"{n_trained:,}", 100 * n_trained / n_params)
    if config.quant.qat != "none":  # the policy line `lmlab quantize` prints, for the run it will quantize
        log.info("quantization: %s", describe_quant(config.quant))

    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.train.keep_checkpoints)
    start_step, best_val = 0, math.inf
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start_step, state, record = restored
        best_val = record.get("best_val_loss", math.inf)
        log.info("resumed from step %d (data position %d)", start_step, record.get("data_position", 0))
    elif config.train.init_from and not uses_lora(config):  # LoRA: the init_from run is the frozen base
        state = sharding.put(load_init_params(state, config.train.init_from), sharding.shardings_of(state))
    frozen = frozen_lib.load_frozen(frozen_lib.run_frozen_sources(task, config), mesh)
    frozen_lib.check_tokenizers(frozen, run_dir)
    frozen_lib.check_or_record(run_dir, frozen, resuming=restored is not None, write=primary)
    return _Run(task, data, model, graphdef, tx, state, mesh, frozen, checkpointer, start_step, best_val,
                restored is not None)


def _compiled_chunk(config, r: _Run, n_chunk: int, inputs, frozen_params):
    """The jitted chunk, compiled ahead of the loop so the first chunk's throughput is not mostly compilation."""
    t0 = time.perf_counter()
    chunk_fn = make_train_chunk(r.graphdef, r.tx, config, n_chunk, make_schedule(config.train), r.task, mesh=r.mesh,
                                state_shardings=sharding.shardings_of(r.state),
                                frozen_graphdefs=frozen_lib.graphdefs_of(r.frozen),
                                frozen_shardings=sharding.shardings_of(frozen_params), host_batches=inputs.host
                                ).lower(r.state, inputs.example, frozen_params).compile()
    log.info("compiled %d train steps per call in %.1fs", n_chunk, time.perf_counter() - t0)
    return chunk_fn


def _log_steps(chunk_metrics, step: int, log_every: int, tokens_per_sec: float, writer, window: MetricWindow,
               last_good: str) -> dict:
    """Writes the logged steps of a chunk (the task's metrics averaged since the last log); returns
    the latest task means. Stops at the first step whose loss or gradient norm is not finite (a
    finite loss with a non-finite gradient still ruins that step's update)."""
    losses, grad_norms = chunk_metrics["loss"], chunk_metrics["grad_norm"]
    finite = np.isfinite(losses) & np.isfinite(grad_norms)
    n_good = len(losses) if finite.all() else int(np.argmin(finite))
    means = {}
    for i in range(n_good):
        window.add({k: v[i] for k, v in chunk_metrics.items() if k not in TRAINER_METRICS})
        if (step + i + 1) % log_every == 0:
            means = window.pop_means()
            writer.write(step + i + 1, {"loss": losses[i], "lr": chunk_metrics["lr"][i], "grad_norm": grad_norms[i],
                                        "tokens_per_sec": tokens_per_sec, **means})
    if n_good < len(losses):
        what = (f"loss became {losses[n_good]}" if not np.isfinite(losses[n_good])
                else f"gradient norm became {grad_norms[n_good]}")
        raise NonFiniteLossError(f"{what} at step {step + n_good + 1}; training stopped and nothing after it was "
                                 f"saved (last good checkpoint: {last_good})")
    return means


def _postfix(loss: float, tokens_per_sec: float, task_means: dict, val: dict | None) -> dict:
    postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tokens_per_sec:,.0f}",
               **{k: f"{v:.3f}" for k, v in task_means.items() if k != "nll"}}
    if val is not None:
        name = "val_bpb" if "val_bpb" in val else "val_loss"
        postfix[name] = f"{val[name]:.3f}"
    return postfix


class _FirstCallsTrace:
    """A jax.profiler trace of the first `calls` train calls after compilation, written to
    `directory` (TensorBoard's profile plugin or Perfetto read it); calls=0: none."""

    def __init__(self, calls: int, directory: pathlib.Path):
        self.left = calls
        if self.left:
            jax.profiler.start_trace(str(directory))

    def called(self) -> None:
        if self.left:
            self.left -= 1
            if not self.left:
                jax.profiler.stop_trace()

    def stop(self) -> None:  # a run ended or stopped before its traced calls were done
        if self.left:
            self.left = 0
            jax.profiler.stop_trace()


def _train(config, run_dir: pathlib.Path, *, progress: bool) -> dict:
    distributed.initialize_distributed()  # a no-op unless the environment names several processes
    primary = distributed.is_primary()
    r = _open_run(config, run_dir, primary)
    state, step, best_val, checkpointer = r.state, r.start_step, r.best_val, r.checkpointer
    frozen_params = frozen_lib.params_of(r.frozen)
    metrics_writer = MetricsWriter(run_dir, resume_step=step) if primary else _NoMetrics()
    t = config.train
    n_chunk = _chunk_size(config, step)
    if n_chunk < t.steps_per_call:
        log.warning("running %d step(s) per call, not train.steps_per_call=%d, to land on every eval, checkpoint "
                    "and final step (eval_every=%d, checkpoint_every=%d, steps=%d%s); use multiples of it "
                    "for full speed", n_chunk, t.steps_per_call, t.eval_every, t.checkpoint_every, t.steps,
                    f", resumed at {step}" if step else "")
    tokens_per_step = r.task.tokens_per_batch() * t.grad_accum
    evaluator = r.task.make_evaluator(r.graphdef, r.data, frozen_lib.task_frozen(r.frozen))
    inputs = train_inputs(config, r.data, r.mesh, n_chunk, step)  # device arrays, or a host loader from `step` on
    try:
        chunk_fn = _compiled_chunk(config, r, n_chunk, inputs, frozen_params)
    except BaseException:
        inputs.close()  # the loader thread, reading ahead while this compiled
        raise

    stop_signal = []
    previous_handlers = {s: signal.signal(s, lambda signum, _frame: stop_signal.append(signum))
                         for s in (signal.SIGTERM, signal.SIGINT)}
    bar = tqdm(total=t.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0,
               smoothing=0.1) if progress and primary else None
    last_good_step = step if r.resumed else None
    task_window = MetricWindow()
    tracer = _FirstCallsTrace(t.profile_chunks if primary else 0, run_dir / "profile")
    try:
        while step < t.steps:
            t0 = time.perf_counter()
            state, chunk_metrics = chunk_fn(state, next(inputs), frozen_params)
            chunk_metrics = jax.device_get(chunk_metrics)
            tracer.called()
            tokens_per_sec = n_chunk * tokens_per_step / (time.perf_counter() - t0)
            last_good = (f"step {last_good_step} in {checkpointer.directory}" if last_good_step is not None
                         else "none saved yet")
            task_means = _log_steps(chunk_metrics, step, t.log_every, tokens_per_sec, metrics_writer, task_window,
                                    last_good)
            step += n_chunk
            val = None
            if step % t.eval_every == 0 or step == t.steps:
                val = evaluator(full_params(state["params"], frozen_params))
                best_val = min(best_val, val["val_loss"])
                metrics_writer.write(step, {k: v for k, v in val.items() if k != "val_tokens"})
                log.debug("step %d: %s", step, val)
            # A signal may reach only some hosts: all stop together (one collective per chunk
            # with several processes, none with one).
            stopping = distributed.any_process(bool(stop_signal))
            if step % t.checkpoint_every == 0 or step == t.steps or stopping:
                record = {"step": step, "data_position": step * t.grad_accum, "best_val_loss": best_val}
                checkpointer.save(step, state, record, val_loss=None if val is None else val["val_loss"])
                last_good_step = step
            if bar is not None:
                bar.set_postfix(_postfix(float(chunk_metrics["loss"][-1]), tokens_per_sec, task_means, val),
                                refresh=False)
                bar.update(n_chunk)
            if stopping:
                checkpointer.wait()
                raise Interrupted(stop_signal[0] if stop_signal else signal.SIGTERM, step)
    finally:
        inputs.close()
        tracer.stop()
        if bar is not None:
            bar.close()
        checkpointer.close()
        metrics_writer.close()
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)

    final = evaluator(full_params(state["params"], frozen_params), full=True)
    summary = {"step": step, **final, "params": count_params(r.model)}
    if primary:
        (run_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_final_metrics(run_dir, step, final)  # as final_val_*: the periodic val_* cover eval_batches only
    return summary
