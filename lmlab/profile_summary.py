"""Where a jitted step spends its time, read from a `jax.profiler` trace without TensorBoard.

`jax.profiler.trace(dir, create_perfetto_trace=True)` writes `perfetto_trace.json.gz`: Chrome
trace events, and every event that executed an XLA instruction carries `args.hlo_op` (and
`args.hlo_module`). On a GPU/TPU those are the kernels on the device's streams (processes named
`/device:...`); on the CPU they are the thunks on the XLA threads of `/host:CPU`. Summing their
durations per instruction gives the table to start an MFU investigation from: which fusions,
matmuls (`cublas`/`gemm`), attention custom calls and collectives dominate the step.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re


class TraceError(ValueError):
    """No readable trace where one was expected (one line, for the CLI)."""


def latest_trace(trace_dir: str | pathlib.Path) -> pathlib.Path:
    """The newest perfetto_trace.json.gz under `trace_dir` (jax writes plugins/profile/<time>/)."""
    found = sorted(pathlib.Path(trace_dir).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise TraceError(f"no perfetto_trace.json.gz under {trace_dir} (was the trace taken with "
                         "create_perfetto_trace=True?)")
    return found[-1]


def op_kind(hlo_op: str) -> str:
    """An instruction's name without its numeric suffix: fusion.12 -> fusion, custom-call.3 -> custom-call."""
    return re.sub(r"[.\d]+$", "", hlo_op) or hlo_op


def summarize(events: list[dict], *, calls: int = 1, top: int = 15, module: str | None = None) -> dict:
    """Per-instruction time of the XLA ops in `events` (Chrome trace events), per call.

    The first device process (`/device:...:0`) is used when the trace has any, so a GPU kernel is
    counted neither again through its host-side launch nor once per device; otherwise every event
    with an `hlo_op` counts.
    `module` keeps only events whose `hlo_module` contains it (e.g. the train step's jit name).
    Only innermost events count: a `while` or `call` thunk spans the ops of its body (CPU), which
    would otherwise be counted twice. Times (and "per_call", executions) are divided by `calls`
    (the number of profiled steps); shares are of the summed op time, which on a multi-threaded
    CPU can exceed the wall time.
    """
    process_names = {e.get("pid"): e.get("args", {}).get("name", "") for e in events
                     if e.get("ph") == "M" and e.get("name") == "process_name"}
    devices = sorted((name, pid) for pid, name in process_names.items() if name.startswith("/device:"))
    # One device: in an SPMD step every device runs the same program, and summing them all would
    # multiply the step's time by the device count.
    device_pids = {devices[0][1]} if devices else set()

    def counted(e) -> bool:
        args = e.get("args") or {}
        if e.get("ph") != "X" or "hlo_op" not in args:
            return False
        if device_pids and e.get("pid") not in device_pids:
            return False
        return module is None or module in str(args.get("hlo_module", ""))

    time_us, count = collections.Counter(), collections.Counter()
    for e in _leaves(list(filter(counted, events))):
        op = e["args"]["hlo_op"]
        time_us[op] += float(e.get("dur", 0.0))
        count[op] += 1
    total_us = sum(time_us.values())
    if not total_us:
        raise TraceError("the trace holds no timed XLA ops" + (f" of module {module!r}" if module else ""))
    by_kind = collections.Counter()
    for op, us in time_us.items():
        by_kind[op_kind(op)] += us
    return {
        "op_time_s": total_us / 1e6 / calls,
        "on_device": bool(device_pids),
        "ops": [{"op": op, "time_s": us / 1e6 / calls, "share": us / total_us, "per_call": count[op] / calls}
                for op, us in time_us.most_common(top)],
        "by_kind": {kind: us / total_us for kind, us in by_kind.most_common()},
    }


def _leaves(events: list[dict]) -> list[dict]:
    """The events, per (process, thread), that contain no other event of the list."""
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.get("pid"), e.get("tid")].append(e)
    leaves = []
    for thread in by_thread.values():
        thread.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        for e, nxt in zip(thread, thread[1:] + [None]):
            # Sorted by start (outer first on ties): an event contains another iff the next one
            # starts before it ends.
            if nxt is None or float(nxt["ts"]) >= float(e["ts"]) + float(e.get("dur", 0.0)):
                leaves.append(e)
    return leaves


def summarize_trace(trace_dir: str | pathlib.Path, **kwargs) -> dict:
    """`summarize` of the newest perfetto trace under `trace_dir`."""
    path = latest_trace(trace_dir)
    try:
        with gzip.open(path, "rt") as f:
            data = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise TraceError(f"cannot read {path}: {e}") from e
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    return {"trace": str(path), **summarize(events, **kwargs)}
