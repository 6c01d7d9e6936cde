"""Multi-host: jax.distributed start-up from the environment, and a real two-process run on
localhost (CPU devices, gloo collectives) that trains like one process with the same global batch."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab import distributed

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- environment -> initialize

def test_explicit_variables():
    env = {"LMLAB_COORDINATOR": "10.0.0.1:1234", "LMLAB_NUM_PROCESSES": "4", "LMLAB_PROCESS_ID": "3"}
    assert distributed.distributed_args(env, on_tpu_vm=False) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    env["LMLAB_LOCAL_DEVICE_IDS"] = "0,1"
    assert distributed.distributed_args(env, on_tpu_vm=False)["local_device_ids"] == [0, 1]


@pytest.mark.parametrize("env, words", [
    ({"LMLAB_COORDINATOR": "h:1", "LMLAB_PROCESS_ID": "0"}, "LMLAB_NUM_PROCESSES"),
    ({"LMLAB_COORDINATOR": "h:1", "LMLAB_NUM_PROCESSES": "2", "LMLAB_PROCESS_ID": "2"}, "LMLAB_PROCESS_ID=2"),
    ({"LMLAB_COORDINATOR": "h:1", "LMLAB_NUM_PROCESSES": "two", "LMLAB_PROCESS_ID": "0"}, "integers"),
])
def test_incomplete_or_bad_explicit_variables_are_config_errors(env, words):
    with pytest.raises(config_lib.ConfigError, match=words):
        distributed.distributed_args(env, on_tpu_vm=False)


SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}


def test_slurm_one_process_per_host_drives_every_gpu_of_the_host():
    env = {**SLURM, "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert distributed.distributed_args(env, on_tpu_vm=False) == {
        "cluster_detection_method": "slurm", "local_device_ids": [0, 1, 2, 3]}
    env = {**SLURM, "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_GPUS_ON_NODE": "8"}
    assert distributed.distributed_args(env, on_tpu_vm=False)["local_device_ids"] == list(range(8))


def test_slurm_one_process_per_gpu():
    env = {**SLURM, "SLURM_NTASKS": "16", "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}
    assert distributed.distributed_args(env, on_tpu_vm=False) == {"cluster_detection_method": "slurm"}  # JAX: [LOCALID]
    env["CUDA_VISIBLE_DEVICES"] = "5"  # srun --gpus-per-task=1 bound one GPU
    assert distributed.distributed_args(env, on_tpu_vm=False)["local_device_ids"] == [0]


def test_single_process_environments_start_nothing():
    assert distributed.distributed_args({}, on_tpu_vm=False) is None
    assert distributed.distributed_args({**SLURM, "SLURM_NTASKS": "1"}, on_tpu_vm=False) is None
    assert distributed.distributed_args({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, on_tpu_vm=False) is None  # sbatch, no srun
    assert distributed.distributed_args({"LMLAB_DISTRIBUTED": "0", **SLURM}, on_tpu_vm=True) is None


def test_tpu_vm_lets_jax_read_the_pod_topology():
    assert distributed.distributed_args({}, on_tpu_vm=True) == {}


def test_slurm_tasks_per_node_parsing():
    assert distributed._tasks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}) == 3
    assert distributed._tasks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "1"}) == 4
    assert distributed._tasks_on_this_node({"SLURM_NTASKS_PER_NODE": "2"}) == 2
    assert distributed._tasks_on_this_node({}) is None


# ------------------------------------------------------------------------ two processes on localhost

TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char",
    "--config.data.seq_len=32", "--config.data.batch_size=8",
    "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.warmup_steps=2", "--config.train.log_every=1", "--config.train.steps_per_call=4",
    "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2",
    "--config.train.steps=8", "--config.model.dropout=0.1",
]


def _gloo_available() -> bool:
    from jax._src.lib import _jax

    return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(run_dir, *extra, env_extra=None, devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0")
    for key in ("LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID", "SLURM_JOB_ID"):
        if env_extra is None or key not in env_extra:
            env.pop(key, None)
    cmd = [sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *TINY, *extra,
           "--workdir", str(run_dir), "--no-progress", "--no-samples"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _slurm_job_id_with_free_port() -> int:
    """A SLURM_JOB_ID whose coordinator port (JAX: 61440 + job id % 4096) is free here."""
    for port in np.random.default_rng().permutation(np.arange(61440, 65536))[:200]:
        with socket.socket() as s:
            try:
                s.bind(("localhost", int(port)))
            except OSError:
                continue
        return int(port) - 61440
    pytest.skip("no free port in JAX's SLURM coordinator range")


def _launch_env(launch: str, process_id: int, port_or_job: int) -> dict:
    if launch == "explicit":
        return {"LMLAB_COORDINATOR": f"localhost:{port_or_job}", "LMLAB_NUM_PROCESSES": "2",
                "LMLAB_PROCESS_ID": str(process_id)}
    # What `srun --ntasks=2` on one node sets: JAX's SLURM detection then finds the coordinator
    # (the step's first node), the process count and this process's id.
    return {"SLURM_JOB_ID": str(port_or_job), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(process_id), "SLURM_LOCALID": str(process_id), "SLURM_NODEID": "0",
            "SLURM_STEP_TASKS_PER_NODE": "2"}


@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")
# Both slow: the same two-process run is tested by test_two_processes_under_real_srun (CI's SLURM)
# and, with explicit variables, by test_host_loader_trains_alike_on_one_and_two_processes_and_across_a_resume.
@pytest.mark.slow
@pytest.mark.parametrize("launch", ["explicit", "slurm"])
def test_two_processes_train_like_one_process(tmp_path, launch):
    """2 processes x 2 CPU devices, mesh data=2 x fsdp=2 (data across the processes, FSDP within),
    against 1 process on 1 device with the same global batch of 8: the same losses, gradient
    norms and held-out loss; process 0 alone writes; the checkpoint both wrote restores on 1 device.
    The processes find each other from LMLAB_* variables, or from a SLURM step's environment."""
    port_or_job = _free_port() if launch == "explicit" else _slurm_job_id_with_free_port()
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    procs = [_train(multi, "--config.mesh.data=2", "--config.mesh.fsdp=2", devices=2,
                    env_extra=_launch_env(launch, i, port_or_job))
             for i in (0, 1)]
    procs.append(_train(single))
    outputs = []
    for proc in procs:  # all three run at once
        try:
            out, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append((proc.returncode, out, err))
    for rc, out, err in outputs:
        assert rc == 0, err[-3000:]
    (_, out0, err0), (_, out1, err1), (_, out_single, _) = outputs

    two, one = _metrics(multi), _metrics(single)
    assert [m["step"] for m in two] == [m["step"] for m in one]
    for a, b in zip(two, one):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a, b)
    summary, summary_single = _json_lines(out0)[-1], _json_lines(out_single)[-1]
    assert summary["val_loss"] == pytest.approx(summary_single["val_loss"], rel=1e-5)
    assert json.loads((multi / "eval.json").read_text())["val_loss"] == summary["val_loss"]
    # Only process 0 prints results (gloo's own C++ "connected" lines go to stderr) and logs progress.
    assert out0.splitlines() == [json.dumps(summary)] and out1 == ""
    assert "compiled" in err0 and "compiled" not in err1
    assert "mesh: data=2 x fsdp=2 x tensor=1 (2 process(es))" in err0

    # The checkpoint the two processes wrote (parameters split over fsdp) restores on one device
    # (the run's 2 x 2 mesh does not fit here: load_run falls back to data=1) and holds the
    # parameters the one-process run ended with.
    import jax

    from lmlab.runs import load_run

    run, reference = load_run(multi), load_run(single)
    assert run.step == reference.step == 8
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(run.params)} == {1}
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")
def test_host_loader_trains_alike_on_one_and_two_processes_and_across_a_resume(tmp_path):
    """data.loader=host: each process reads its own rows of the global batch from the token file.
    2 processes x 2 devices (data=2 x fsdp=2) and 1 process on 1 device give the same losses; the
    two-process run, stopped after its step-4 checkpoint (the later one removed) and resumed by
    one process, replays steps 5-8 with the same losses too: batches depend on (seed, step) alone."""
    host = ["--config.data.loader=host", "--config.train.checkpoint_every=4"]
    multi, single, resumed = tmp_path / "two_processes", tmp_path / "one_process", tmp_path / "resumed"
    port = _free_port()
    procs = [_train(multi, *host, "--config.mesh.data=2", "--config.mesh.fsdp=2", devices=2,
                    env_extra=_launch_env("explicit", i, port)) for i in (0, 1)]
    procs.append(_train(single, *host))
    outputs = []
    for proc in procs:  # all three run at once
        try:
            outputs.append((proc.communicate(timeout=400), proc.returncode))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for (_, err), rc in outputs:
        assert rc == 0, err[-3000:]
    assert "data: host loader, windows read from 1 memory-mapped token file(s)" in outputs[0][0][1]
    two, one = _metrics(multi), _metrics(single)
    assert [m["step"] for m in two] == [m["step"] for m in one] and len(two) >= 8
    for a, b in zip(two, one):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a, b)

    import shutil

    shutil.copytree(multi, resumed)
    shutil.rmtree(resumed / "checkpoints" / "8")
    out, err = _train(resumed, *host).communicate(timeout=400)
    assert "resumed from step 4" in err, err[-3000:]
    again = {m["step"]: m for m in _metrics(resumed) if "loss" in m}
    assert sorted(again) == list(range(1, 9))
    for m in one:
        if "loss" in m:
            assert again[m["step"]]["loss"] == pytest.approx(m["loss"], rel=1e-5), (again[m["step"]], m)


JOIN_AND_GATHER = """
import json, sys
import numpy as np
from lmlab import cli
cli._join_processes()
from jax.experimental import multihost_utils
print(json.dumps(multihost_utils.process_allgather(np.array([int(sys.argv[1])])).ravel().tolist()))
"""


@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")
def test_gloo_connection_lines_stay_off_stdout(tmp_path):
    """gloo prints "[Gloo] Rank 0 is connected to 1 peer ranks..." from C++ on file descriptor 1;
    stdout is the results stream (one JSON line from process 0, nothing from the others)."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", JOIN_AND_GATHER, str(i)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, JAX_PLATFORMS="cpu", LMLAB_COORDINATOR=f"localhost:{port}",
                                       LMLAB_NUM_PROCESSES="2", LMLAB_PROCESS_ID=str(i)))
             for i in (0, 1)]
    (out0, err0), (out1, err1) = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], err0[-2000:] + err1[-2000:]
    assert out0 == "[0, 1]\n" and out1 == ""
    assert "[Gloo] Rank 0 is connected" in err0 and "[Gloo] Rank 1 is connected" in err1
@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")
def test_two_processes_under_real_srun(slurm_cluster, tmp_path):
    """The same two-process run as above, started by a real SLURM (`srun --ntasks=2`, the local
    cluster of .ci/slurm_up.sh) instead of a faked environment: JAX finds the coordinator, process
    count and ids from the step SLURM made, and the run trains like one process."""
    multi, single = tmp_path / "srun", tmp_path / "one_process"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0")
    for key in [k for k in env if k.startswith(("SLURM_", "LMLAB_COORDINATOR", "LMLAB_NUM_PROCESSES", "LMLAB_PROCESS_ID"))]:
        env.pop(key)
    cmd = ["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1", "--export=ALL", "--chdir", str(ROOT),
           sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *TINY, "--config.mesh.data=2",
           "--config.mesh.fsdp=2", "--workdir", str(multi), "--no-progress", "--no-samples"]
    srun = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reference = _train(single)
    try:
        out, err = srun.communicate(timeout=400)
        reference.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        srun.kill()
        reference.kill()
        raise
    assert srun.returncode == 0, err[-3000:]
    assert reference.returncode == 0
    assert "mesh: data=2 x fsdp=2 x tensor=1 (2 process(es))" in err
    assert len(_json_lines(out)) == 1  # process 0 alone prints the summary
    two, one = _metrics(multi), _metrics(single)
    assert [m["step"] for m in two] == [m["step"] for m in one]
    for a, b in zip(two, one):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a, b)
