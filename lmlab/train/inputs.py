"""What the jitted train chunk reads besides the state (lmlab.train.step), one value per call.

data.loader device: the task's training arrays, put replicated on every device once; batches are
drawn from them on device. data.loader host (a task's TaskData.extra["host_sources"], see
lmlab.tasks.lm): each call's batches, read from the token files by lmlab.data.host_loader from the
run's current step on, so a resume needs nothing beyond the checkpoint's step.
"""

from __future__ import annotations

import logging

import jax
import numpy as np

from lmlab import sharding
from lmlab.data.host_loader import HostLoader
from lmlab.data.mixture import mixture_weights

log = logging.getLogger("lmlab")


class DeviceArrays:
    """The same replicated training arrays for every call."""

    host = False

    def __init__(self, arrays):
        self.example = arrays

    def __iter__(self):
        return self

    def __next__(self):
        return self.example

    def close(self) -> None:
        pass


def train_inputs(config, data, mesh, steps_per_call: int, start_step: int):
    """An iterator of the chunk's second argument, with `.example` (to compile against), `.host`
    (whether it yields stacked host batches) and `.close()`."""
    sources = data.extra.get("host_sources")
    if sources is None:
        return DeviceArrays(sharding.put_replicated(jax.tree.map(np.asarray, data.train), mesh))
    d, t = config.data, config.train
    log.info("data: host loader, windows read from %d memory-mapped token file(s) (%s tokens) from step %d",
             len(sources), f"{sum(len(s) for s in sources):,}", start_step)
    weights = mixture_weights(d.mixture) if d.get("mixture", "") else np.ones(1)
    return HostLoader(sources, weights, seed=config.seed, batch_size=d.batch_size, seq_len=d.seq_len,
                      grad_accum=t.grad_accum, steps_per_call=steps_per_call, start_step=start_step,
                      batch_sharding=sharding.stacked_batch_sharding(mesh))
