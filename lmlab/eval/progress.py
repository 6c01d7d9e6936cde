"""An opt-in progress bar over held-out batches, on stderr: `lmlab eval` turns it on.

The evaluation loops (lmlab.eval.lm.evaluate, lmlab.eval.batching.eval_sums) pass their batches
through `track`, which is a no-op unless a caller is inside `shown()`; training's periodic
evaluations stay quiet under the training bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator

_description: contextvars.ContextVar[str | None] = contextvars.ContextVar("lmlab_eval_progress", default=None)


@contextlib.contextmanager
def shown(description: str = "eval") -> Iterator[None]:
    """Evaluation loops run inside show a bar named `description`."""
    token = _description.set(description)
    try:
        yield
    finally:
        _description.reset(token)


def track(items: Iterable, total: int | None = None, unit: str = "batch") -> Iterable:
    """`items`, counted on a stderr bar when inside `shown()`."""
    description = _description.get()
    if description is None:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
