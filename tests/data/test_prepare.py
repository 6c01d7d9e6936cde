"""prepare_heldout: a trained run's held-out ids without tokenizing its training split."""

import shutil

import numpy as np
import pytest
from flax import nnx

from lmlab.data.prepare import prepare, prepare_heldout
from lmlab.runs import load_run
from lmlab.tasks import get_task
from tests.tiny_runs import BERT, GPT, write_tiny_run


@pytest.mark.parametrize("kind", [GPT, BERT], ids=["lm", "mlm"])
def test_heldout_only_preparation_evaluates_like_the_full_one(tmp_path, kind):
    run_dir = write_tiny_run(tmp_path / "run", kind)
    run = load_run(run_dir)
    task = get_task(run.config)
    graphdef, _ = nnx.split(run.model)
    heldout = task.prepare_heldout(run_dir)
    assert (run_dir / "data" / "val.bin").exists() and not (run_dir / "data" / "train.bin").exists()
    assert len(heldout.train) == 0
    got = task.make_evaluator(graphdef, heldout)(run.params, full=True)

    full_dir = tmp_path / "full"
    shutil.copytree(run_dir, full_dir, ignore=shutil.ignore_patterns("data"))
    full_task = get_task(run.config)
    want = full_task.make_evaluator(graphdef, full_task.prepare(full_dir))(run.params, full=True)
    assert got == want
    np.testing.assert_array_equal(prepare_heldout(run.config, run_dir).val_tokens,
                                  prepare(run.config, full_dir).val_tokens)
    assert (full_dir / "data" / "train.bin").exists()
