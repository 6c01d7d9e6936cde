"""Multi-host start-up and process coordination (jax.distributed).

Multi-host. `initialize_distributed()` starts jax.distributed from the environment (explicit
LMLAB_COORDINATOR / LMLAB_NUM_PROCESSES / LMLAB_PROCESS_ID, a SLURM step with several tasks, or a
Cloud TPU VM); every process then runs the same program on the global mesh. Batches are drawn on
device from one key, so all processes agree on the global batch's indices, and the batch sharding
constraint makes each device gather only its own rows: a process reads only its slice of every
global batch (see `shard_batch`). Held-out batches, built on the host from data every process
holds, are put split over the batch axes the same way, each process supplying its devices' rows
(see `put_batch`, `data_parallel_eval`).
"""


from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np

from lmlab import config as config_lib

log = logging.getLogger("lmlab")


# ----------------------------------------------------------------------------------- processes

def is_primary() -> bool:
    """Process 0 writes logs, metrics, configs and summaries; every process takes part in
    computation and checkpointing."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier across processes (no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any (e.g. a SIGTERM that reached one host)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def primary_first(fn):
    """Runs fn() on process 0, then on the others (e.g. data preparation into a shared run
    directory: the others find the files and only read them)."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if is_primary() else None
    sync("lmlab_primary_first")
    return result if is_primary() else fn()


def topology() -> dict:
    """What this process sees after joining the others (`./launch.sh devices`)."""
    initialize_distributed()
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "backend": jax.default_backend(), "local_devices": [str(d) for d in jax.local_devices()],
            "global_device_count": jax.device_count()}


def _on_cloud_tpu_vm() -> bool:
    """A Google TPU on the PCI bus and libtpu installed: how JAX itself recognises a TPU VM."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == "0x1ae0":
                    return True
        except OSError:
            pass
    return False


def _tasks_on_this_node(env: Mapping[str, str]) -> int | None:
    """SLURM tasks of this step on this node, from SLURM_STEP_TASKS_PER_NODE ("4(x2),3") and
    SLURM_NODEID, or SLURM_NTASKS_PER_NODE."""
    spec, node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE"), env.get("SLURM_NODEID")
    if spec and node is not None:
        counts = []
        for part in spec.split(","):
            count, _, repeat = part.partition("(x")
            counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
        if int(node) < len(counts):
            return counts[int(node)]
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    return int(per_node) if per_node and per_node.isdigit() else None


def distributed_args(env: Mapping[str, str] | None = None, *, on_tpu_vm: bool | None = None) -> dict | None:
    """The jax.distributed.initialize arguments this environment asks for, or None (one process).

    In order: LMLAB_DISTRIBUTED=0 turns it off; explicit LMLAB_COORDINATOR (host:port),
    LMLAB_NUM_PROCESSES and LMLAB_PROCESS_ID (all three); a SLURM step with more than one task
    (`srun`, one process per host or per GPU); a Cloud TPU VM (every worker of a pod slice runs
    the same command; JAX reads the topology from the TPU metadata). LMLAB_LOCAL_DEVICE_IDS
    (comma-separated) picks the accelerators a process drives.
    """
    env = os.environ if env is None else env
    if env.get("LMLAB_DISTRIBUTED", "").lower() in ("0", "off", "false", "no"):
        return None
    args: dict[str, Any] = {}
    if env.get("LMLAB_LOCAL_DEVICE_IDS"):
        args["local_device_ids"] = [int(i) for i in env["LMLAB_LOCAL_DEVICE_IDS"].split(",") if i.strip()]
    explicit = [k for k in ("LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID") if env.get(k)]
    if explicit:
        if len(explicit) < 3:
            missing = sorted({"LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID"} - set(explicit))
            raise config_lib.ConfigError(f"multi-host start needs {', '.join(missing)} as well as {', '.join(explicit)}")
        try:
            num, pid = int(env["LMLAB_NUM_PROCESSES"]), int(env["LMLAB_PROCESS_ID"])
        except ValueError:
            raise config_lib.ConfigError("LMLAB_NUM_PROCESSES and LMLAB_PROCESS_ID must be integers") from None
        if not 0 <= pid < num:
            raise config_lib.ConfigError(f"LMLAB_PROCESS_ID={pid} must be in [0, LMLAB_NUM_PROCESSES={num})")
        return {"coordinator_address": env["LMLAB_COORDINATOR"], "num_processes": num, "process_id": pid, **args}
    if env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_NODELIST") and int(env.get("SLURM_NTASKS", "1")) > 1:
        # JAX's SLURM detection finds the coordinator (first node of the step), the process
        # count and id. Its default gives each process one local device, [SLURM_LOCALID]: right
        # for one task per GPU, wrong for one task per host, which should drive every GPU it sees.
        if "local_device_ids" not in args:
            visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            gpus_on_node = env.get("SLURM_GPUS_ON_NODE", "")
            if _tasks_on_this_node(env) == 1:
                n = len(visible) or (int(gpus_on_node) if gpus_on_node.isdigit() else 0)
                if n:
                    args["local_device_ids"] = list(range(n))
            elif len(visible) == 1:  # srun --gpus-per-task=1 already bound one GPU to this task
                args["local_device_ids"] = [0]
        return {"cluster_detection_method": "slurm", **args}
    if on_tpu_vm if on_tpu_vm is not None else _on_cloud_tpu_vm():
        return {**args}
    return None


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Starts jax.distributed if the environment asks for several processes (see
    distributed_args); idempotent. Must run before anything touches a device. On processes
    other than 0 the lmlab logger is raised to WARNING: only process 0 logs progress.
    Returns whether this is a multi-process run."""
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = distributed_args(env)
    if args is None:
        return False
    jax.distributed.initialize(**args)
    if jax.process_index() != 0:
        log.setLevel(logging.WARNING)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1
