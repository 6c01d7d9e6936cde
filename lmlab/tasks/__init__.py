"""Training objectives, one per model family: `get_task(config)` picks it from `model.family`."""

from __future__ import annotations

import importlib

from lmlab.tasks.base import Task, TaskData

# family -> "module:class"; imported lazily so a family's extra dependencies load only when used.
TASKS = {
    "gpt": "lmlab.tasks.lm:LMTask",
    "bert": "lmlab.tasks.mlm:bert_task",  # masked LM; sequence classification when model.n_classes > 0
    "encdec": "lmlab.tasks.translation:TranslationTask",  # teacher-forced translation, BLEU
}


def get_task(config) -> Task:
    family = config.model.family
    if family not in TASKS:
        raise ValueError(f"no training task for model family '{family}'; available: {', '.join(TASKS)}")
    module, name = TASKS[family].split(":")
    return getattr(importlib.import_module(module), name)(config)


__all__ = ["TASKS", "Task", "TaskData", "get_task"]
