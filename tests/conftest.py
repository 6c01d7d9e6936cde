"""Shared test setup: CPU by default, GPU and slow tests skipped unless asked for."""

import os
import tempfile

import pytest

# Tests describe CPU behaviour unless marked; keep XLA from grabbing a GPU's memory if one exists.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Compiling dominates the suite on CPU, and many tests (and the training subprocesses they start)
# compile the same tiny programs: jax's persistent compilation cache, shared by the xdist workers
# and the subprocesses through these variables, compiles each once per machine. Entries are keyed
# by the program, jax version and flags, so a hit is the same executable.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"lmlab-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


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
