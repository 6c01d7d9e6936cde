"""Shared test setup: CPU by default, GPU and slow tests skipped unless asked for."""

import atexit
import os
import shutil
import tempfile

import pytest

# Tests describe CPU behaviour unless marked; keep XLA from grabbing a GPU's memory if one exists.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Compiling dominates the suite on CPU, and many tests (and the training subprocesses they start)
# compile the same tiny programs: jax's persistent compilation cache, shared through these
# variables by the xdist workers (started after this runs, they inherit it) and the subprocesses,
# compiles each once per session. Keys hold the program, jax version and flags, so a hit is the
# same executable. One fresh directory per session, removed at exit: jax writes entries without
# locking, and a process killed mid-write (the SIGKILL test) must not leave a truncated entry for
# later runs to warn about.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmlab-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The same reason: LLVM's optimisations of the CPU code take a large share of each compile and buy
# little for tiny test programs (tests/models/test_gpt.py: 104 s -> 88 s). The HLO passes (fusion,
# layouts) are unchanged. Subprocesses that set their own XLA_FLAGS (simulated devices) keep theirs.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def _has_gpu() -> bool:
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("LMLAB_SLOW") == "1"
    has_gpu = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set LMLAB_SLOW=1 to run"))
        if "gpu" in item.keywords:
            if has_gpu is None:
                has_gpu = _has_gpu()
            if not has_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a GPU"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster that answers here (.ci/slurm_up.sh starts a one-node one). Skipped without
    sbatch or a responding controller, unless LMLAB_REQUIRE_SLURM=1 (CI), which makes that a failure."""
    import shutil
    import subprocess

    required = os.environ.get("LMLAB_REQUIRE_SLURM") == "1"
    if shutil.which("sbatch") is None:
        if required:
            pytest.fail("LMLAB_REQUIRE_SLURM=1 but sbatch is not on PATH (run .ci/slurm_up.sh up)")
        pytest.skip("needs SLURM (sbatch not on PATH; .ci/slurm_up.sh up starts a local cluster)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
        states = out.stdout.split() if out.returncode == 0 else []
    except subprocess.TimeoutExpired:
        states = []
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states):
        if required:
            pytest.fail(f"LMLAB_REQUIRE_SLURM=1 but no SLURM node is up (sinfo: {states or out.stderr.strip()})")
        pytest.skip("needs a running SLURM cluster (.ci/slurm_up.sh up)")
