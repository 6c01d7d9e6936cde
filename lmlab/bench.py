"""Benchmarks behind `lmlab bench train | attention | decode`; each returns one JSON-ready dict.

- `bench_train`: throughput and MFU of the trainer's own jitted chunk (`make_train_chunk` on the
  state from `init_state`) on random tokens already on the device, so no data preparation runs.
- `bench_loader`: tokens/s of the host loader alone (data.loader=host), against `bench_train`'s.
- `bench_attention`: forward + backward time and compiled peak memory per attention implementation
  and sequence length.
- `bench_decode`: generation throughput of a trained run with and without the KV cache (decoder-only
  or encoder-decoder runs; the latter translate random sources of the configured length).

Timings are medians of several calls after compilation and one warm-up call, each ended with
`jax.block_until_ready`.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from lmlab import distributed
from lmlab import flops as flops_lib
from lmlab import profile_summary
from lmlab import sharding
from lmlab.data.host_loader import HostLoader
from lmlab.data.token_file import read_token_file, write_token_file
from lmlab.decode.sampling import generate
from lmlab.models import count_params
from lmlab.ops.attention import IMPLS, attention
from lmlab.ops.attention_memory import compiled_memory
from lmlab.tasks import get_task
from lmlab.train import frozen as frozen_lib
from lmlab.train.optimizer import make_schedule
from lmlab.train.state import init_state
from lmlab.train.step import make_train_chunk

log = logging.getLogger("lmlab")



class BenchArgumentError(ValueError):
    """Arguments that cannot be benchmarked (e.g. a decode longer than the model's positions)."""


def device_kind() -> str:
    return jax.devices()[0].device_kind


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of fn (its result is waited for)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------------------- train

def _profiled_calls(compiled, state, args: tuple, profile_dir, calls: int, steps_per_call: int) -> tuple:
    """Runs `calls` more train calls under jax.profiler.trace; (the new state, lmlab.profile_summary's
    time per optimizer step of each XLA instruction, or {"error", "trace_dir"} without device events)."""
    with jax.profiler.trace(str(profile_dir), create_perfetto_trace=True):
        for _ in range(calls):
            state, metrics = compiled(state, *args)  # the state is donated: keep the new one
            jax.block_until_ready((state, metrics))
    module = re.match(r"HloModule ([^\s,]+)", compiled.as_text())
    try:
        return state, profile_summary.summarize_trace(profile_dir, calls=calls * steps_per_call,
                                                      module=module.group(1) if module else None)
    except profile_summary.TraceError as e:  # e.g. no device events (CUPTI missing): keep the timings
        log.warning("bench train: no profile table: %s", e)
        return state, {"error": str(e), "trace_dir": str(profile_dir)}


def bench_train(config, *, steps: int = 5, name: str | None = None, profile_dir: str | None = None,
                profile_calls: int = 3) -> dict:
    """Times `steps` calls (each `train.steps_per_call` optimizer steps) of the trainer's chunk.

    With `profile_dir`, `profile_calls` more calls (after the timed ones, so the timing is not
    perturbed) run under `jax.profiler.trace`; the result then holds "profile": the time per
    optimizer step of each XLA instruction (lmlab.profile_summary), and the trace stays in
    `profile_dir` for Perfetto / TensorBoard.

    The vocabulary size is `config.tokenizer.vocab_size` (for a char tokenizer the trainer would
    take it from the corpus instead).
    """
    if steps < 1 or profile_calls < 1:
        raise BenchArgumentError(f"need at least one timed and one profiled call, got steps={steps}, "
                                 f"profile_calls={profile_calls}")
    t, data = config.train, config.data
    vocab_size = config.tokenizer.vocab_size

    distributed.initialize_distributed()
    mesh = sharding.make_mesh(config.get("mesh"))  # the trainer's mesh: every device unless configured
    sharding.check_batch(config, mesh)
    model, graphdef, tx, state = init_state(config, vocab_size, mesh)
    n_params = int(count_params(model))
    del model  # shares its arrays with `state`, which the chunk donates
    log.info("bench train: %.2fM parameters, %d x %d tokens x %d accum, %d steps per call",
             n_params / 1e6, data.batch_size, data.seq_len, t.grad_accum, t.steps_per_call)

    task = get_task(config)
    train_arrays = sharding.put_replicated(task.synthetic_train_arrays(vocab_size, jax.random.key(config.seed)), mesh)

    t0 = time.perf_counter()
    frozen = frozen_lib.load_frozen(frozen_lib.run_frozen_sources(task, config), mesh)  # teacher, reference, LoRA base
    frozen_params = frozen_lib.params_of(frozen)
    chunk = make_train_chunk(graphdef, tx, config, t.steps_per_call, make_schedule(t), task, mesh=mesh,
                             state_shardings=sharding.shardings_of(state), frozen_graphdefs=frozen_lib.graphdefs_of(frozen),
                             frozen_shardings=sharding.shardings_of(frozen_params))
    compiled = chunk.lower(state, train_arrays, frozen_params).compile()
    compile_s = time.perf_counter() - t0
    log.info("bench train: compiled in %.1fs", compile_s)

    state, metrics = compiled(state, train_arrays, frozen_params)  # warm-up
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, train_arrays, frozen_params)  # the state is donated: keep the new one
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    call_s = statistics.median(times)
    log.info("bench train: call times %s s", ", ".join(f"{x:.4f}" for x in times))

    profile = None
    if profile_dir is not None:
        state, profile = _profiled_calls(compiled, state, (train_arrays, frozen_params), profile_dir, profile_calls,
                                         t.steps_per_call)

    step_time_s = call_s / t.steps_per_call
    tokens_per_sec = task.tokens_per_batch() * t.grad_accum / step_time_s
    per_token = task.flops_per_token(vocab_size)  # per token as the task counts them
    kind = device_kind()
    n_devices = len(jax.tree.leaves(state)[0].sharding.device_set)  # devices the chunk ran on
    peak = flops_lib.peak_bf16_flops(kind)
    return {
        "tokens_per_sec": tokens_per_sec,
        "step_time_s": step_time_s,
        "flops_per_token": per_token,
        "mfu": flops_lib.mfu(tokens_per_sec, per_token, kind, n_devices),
        "peak_flops": peak,
        "device_kind": kind,
        "n_devices": n_devices,
        "compile_s": compile_s,
        "params": n_params,
        "config": name,
        "memory_peak_bytes": _peak_bytes_in_use(),
        **({"profile": profile} if profile is not None else {}),
    }


def _peak_bytes_in_use() -> int | None:
    """The device allocator's high-water mark so far (GPU/TPU), or None where it reports none (CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends do not implement it
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


# -------------------------------------------------------------------------------------- loader

def bench_loader(config, *, token_file: str | None = None, n_tokens: int = 1 << 26, calls: int = 20) -> dict:
    """Tokens/s of the host loader alone (lmlab.data.host_loader: windows read from a memory-mapped
    token file and placed on the trainer's mesh) at the config's batch, seq_len, grad_accum and
    steps_per_call, for comparison with `bench_train`'s consumption. The file is `token_file`,
    or `n_tokens` random ids written to a temporary one. Median of `calls` chunks after one."""
    import tempfile

    import numpy as np


    if calls < 1 or n_tokens <= config.data.seq_len:
        raise BenchArgumentError(f"need calls >= 1 and more tokens than data.seq_len, got {calls}, {n_tokens}")
    t, d = config.train, config.data
    mesh = sharding.make_mesh(config.get("mesh"))
    sharding.check_batch(config, mesh)
    with tempfile.TemporaryDirectory() as tmp:
        if token_file is None:
            token_file = f"{tmp}/train.bin"
            ids = np.random.default_rng(0).integers(0, config.tokenizer.vocab_size, n_tokens, dtype=np.uint32)
            write_token_file(token_file, ids, vocab_size=config.tokenizer.vocab_size)
            del ids
        tokens = read_token_file(token_file)
        with HostLoader([tokens], [1.0], seed=config.seed, batch_size=d.batch_size, seq_len=d.seq_len,
                        grad_accum=t.grad_accum, steps_per_call=t.steps_per_call, start_step=0,
                        batch_sharding=sharding.stacked_batch_sharding(mesh), ahead=1) as loader:
            jax.block_until_ready(next(loader))  # the thread has started and read one chunk
            call_s = median_seconds(lambda: next(loader), calls)
    tokens_per_call = t.steps_per_call * t.grad_accum * d.batch_size * d.seq_len
    return {"tokens_per_sec": tokens_per_call / call_s, "call_s": call_s, "tokens_per_call": tokens_per_call,
            "file_tokens": int(len(tokens)), "device_kind": device_kind(), "n_devices": mesh.size}


# ----------------------------------------------------------------------------------- attention

def available_attention_impls(backend: str | None = None) -> tuple[str, ...]:
    """The concrete implementations worth timing here ("auto" picks among the first three).

    Pallas runs on CPU only in interpret mode (a correctness tool, far too slow to time)."""
    backend = backend or jax.default_backend()
    if backend == "gpu":
        return ("naive", "blockwise", "cudnn", "pallas")
    return ("naive", "blockwise", "pallas") if backend == "tpu" else ("naive", "blockwise")


def _memory_limit_bytes() -> int | None:
    """What one computation may use: the accelerator's allocator limit, else the host's memory."""
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends do not implement it
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _short_error(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def bench_attention(*, impls: Sequence[str] | None = None, lengths: Sequence[int] = (256, 512, 1024),
                    batch: int = 1, heads: int = 8, head_dim: int = 64, dtype: str = "float32",
                    causal: bool = False, repeats: int = 5) -> dict:
    """Forward + backward time (median of `repeats` after a warm-up) and compiled peak bytes.

    Each (impl, T) is one row; a combination that is unavailable here, fails to compile or whose
    compiled peak exceeds the device's memory gets an "error" field and null measurements.
    """

    backend = jax.default_backend()
    available = available_attention_impls(backend)
    impls = list(impls) if impls else list(available)
    for impl in impls:
        if impl not in IMPLS or impl == "auto":
            raise BenchArgumentError(f"unknown attention impl {impl!r}; choose from {', '.join(IMPLS[1:])}")
    if dtype not in ("float32", "bfloat16"):
        raise BenchArgumentError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if min(batch, heads, head_dim, repeats, *lengths) < 1:
        raise BenchArgumentError("batch, heads, head dim, repeats and lengths must be positive")
    jdtype = jnp.dtype(dtype)
    limit = _memory_limit_bytes()

    def loss(q_BTNH, k_BTNH, v_BTNH, w_BTNH, impl):
        out_BTNH = attention(q_BTNH, k_BTNH, v_BTNH, causal=causal, impl=impl)
        return jnp.sum(out_BTNH.astype(jnp.float32) * w_BTNH)

    rows = []
    for impl in impls:
        for T in lengths:
            row = {"impl": impl, "T": int(T), "time_ms": None, "peak_bytes": None}
            rows.append(row)
            if impl not in available:
                row["error"] = (f"interpret mode only on backend {backend!r}" if impl == "pallas"
                                else f"not available on backend {backend!r}")
                continue
            scores_bytes = 4 * batch * heads * int(T) * int(T)
            if impl == "naive" and limit is not None and scores_bytes > limit:
                # Not even compiled: XLA's autotuner would try (and fail) to allocate them.
                row["error"] = f"its float32 [B, N, T, T] scores alone need {scores_bytes} bytes, more than the device's {limit}"
                log.info("bench attention: %s T=%d: %s", impl, T, row["error"])
                continue
            try:
                memory = compiled_memory(impl, T, B=batch, N=heads, H=head_dim, dtype=jdtype, causal=causal)
            except Exception as e:  # unsupported shapes or dtypes surface at trace/compile time
                row["error"] = _short_error(e)
                log.info("bench attention: %s T=%d: %s", impl, T, row["error"])
                continue
            row["peak_bytes"] = int(memory.peak_bytes)
            if limit is not None and memory.peak_bytes > limit:
                row["error"] = f"compiled peak {memory.peak_bytes} bytes exceeds the device's {limit}"
                log.info("bench attention: %s T=%d: %s", impl, T, row["error"])
                continue
            keys = jax.random.split(jax.random.key(int(T)), 4)
            shape = (batch, int(T), heads, head_dim)
            q, k, v = (jax.random.normal(key, shape, jnp.float32).astype(jdtype) for key in keys[:3])
            w = jax.random.normal(keys[3], shape, jnp.float32)
            try:
                grad = jax.jit(jax.grad(lambda q, k, v, w: loss(q, k, v, w, impl), argnums=(0, 1, 2)))
                compiled = grad.lower(q, k, v, w).compile()
                jax.block_until_ready(compiled(q, k, v, w))  # warm-up
                row["time_ms"] = 1e3 * median_seconds(lambda: compiled(q, k, v, w), repeats)
            except Exception as e:  # e.g. out of memory at run time
                row["error"] = _short_error(e)
            log.info("bench attention: %s T=%d: %s ms, peak %s bytes", impl, T,
                     row["time_ms"] and f"{row['time_ms']:.3f}", row["peak_bytes"])
    return {"device_kind": device_kind(), "rows": rows}


# -------------------------------------------------------------------------------------- decode

def bench_decode(run, *, batch_sizes: Sequence[int] = (1, 8, 32), new_tokens: int = 256,
                 prompt_len: int = 16, repeats: int = 3, seed: int = 0) -> dict:
    """Greedy generation tokens/s of a loaded run (`lmlab.runs.load_run`), cached vs recomputed.

    Tokens/s counts generated tokens (batch x new_tokens) per second of a whole `generate` call
    (prefill included), median of `repeats` calls after one call that compiles.

    An encoder-decoder (translation) run decodes each prompt against a random source of
    `data.src_len` real tokens (no padding), encoded once per call with the cache and at every
    step without it; the result then also holds that `source_len`. Encoder-only (BERT) runs have
    nothing to decode and are refused.
    """

    if not run.model.decodes:
        raise BenchArgumentError(
            f"bench decode needs a model with a decoder; {run.run_dir} is a '{run.config.model.family}' run, which "
            "only encodes (decoder runs have model.family 'gpt' or 'encdec')")
    if min(new_tokens, prompt_len, repeats, *batch_sizes) < 1:
        raise BenchArgumentError("batch sizes, new tokens, prompt length and repeats must be positive")
    max_len = run.model.config.max_len
    if prompt_len + new_tokens > max_len:
        raise BenchArgumentError(
            f"prompt length {prompt_len} + new tokens {new_tokens} = {prompt_len + new_tokens} exceeds "
            f"the model's max_len {max_len}; use a shorter --prompt-len or fewer --new-tokens")
    vocab_size = run.tokenizer.vocab_size
    source_len = run.config.data.src_len if run.model.needs_source else None
    key = jax.random.key(seed)
    rows = []
    for batch in batch_sizes:
        batch_key = jax.random.fold_in(key, batch)
        prompt_BT = jax.random.randint(batch_key, (batch, prompt_len), 0, vocab_size, jnp.int32)
        source_BS = None
        if source_len is not None:  # ids from 4 on: no pad (0, masked by the encoder), bos, eos or unk
            source_BS = jax.random.randint(jax.random.fold_in(batch_key, 1), (batch, source_len), 4, vocab_size,
                                           jnp.int32)
        row = {"batch": int(batch)}
        for use_cache, field in ((True, "cached_tokens_per_sec"), (False, "recompute_tokens_per_sec")):
            def call():
                return generate(run.model, prompt_BT, max_new_tokens=new_tokens, key=key, temperature=0.0,
                                use_cache=use_cache, source=source_BS)

            t0 = time.perf_counter()
            jax.block_until_ready(call())  # compiles
            log.info("bench decode: batch %d, cache %s: first call (compile + run) %.1fs",
                     batch, use_cache, time.perf_counter() - t0)
            row[field] = batch * new_tokens / median_seconds(call, repeats)
        row["speedup"] = row["cached_tokens_per_sec"] / row["recompute_tokens_per_sec"]
        log.info("bench decode: %s", row)
        rows.append(row)
    result = {"device_kind": device_kind(), "rows": rows}
    if source_len is not None:
        result["source_len"] = int(source_len)
    return result
