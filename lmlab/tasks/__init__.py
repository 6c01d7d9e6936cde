"""Training objectives, one per `task` config key: `get_task(config)` builds the one named there.

The task is separate from the model family: a GPT decoder can be pretrained (`lm`), and later
fine-tuned or aligned by other tasks; each task class says which families it trains
(`Task.families`) and a wrong pair is a config error. Run directories written before the `task`
key existed get it inferred from their family (lmlab.config.infer_task).
"""

from __future__ import annotations

import importlib

from lmlab.config import ConfigError
from lmlab.tasks.base import LossOutput, Task, TaskData

# task -> "module:class"; imported lazily so a task's extra dependencies load only when used.
TASKS = {
    "lm": "lmlab.tasks.lm:LMTask",                      # next-token prediction (GPT family)
    "mlm": "lmlab.tasks.mlm:MLMTask",                   # masked LM (BERT family)
    "classify": "lmlab.tasks.classify:ClassifyTask",    # sequence classification (BERT + head)
    "translate": "lmlab.tasks.translation:TranslationTask",  # teacher-forced translation, BLEU
    "sft": "lmlab.tasks.sft:SFTTask",                   # supervised fine-tuning on conversations (GPT)
    "dpo": "lmlab.tasks.dpo:DPOTask",                   # direct preference optimization (GPT + frozen reference)
    "reward": "lmlab.tasks.reward:RewardTask",          # Bradley-Terry reward model (GPT + reward head)
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"config key 'task' must be one of {', '.join(TASKS)}; got {name!r}")
    module, attr = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def get_task(config) -> Task:
    cls = task_class(config.task)
    family = config.model.family
    if family not in cls.families:
        raise ConfigError(f"task '{config.task}' trains model.family {' or '.join(cls.families)}, not '{family}'; "
                          f"set model.family or task")
    task = cls(config)
    teacher = config.distill.teacher if "distill" in config else ""
    if teacher and "teacher" not in task.frozen_sources():
        raise ConfigError(f"distill.teacher is set, but task '{config.task}' does not distil (tasks that do: lm, sft)")
    return task


__all__ = ["TASKS", "LossOutput", "Task", "TaskData", "get_task", "task_class"]
