"""The `task` key (lmlab.tasks): each task names the families it trains, a wrong pair or an unknown
name is a one-line config error, and run directories from before the key infer it."""

import json

import pytest

from lmlab import config as config_lib
from lmlab.tasks import get_task
from lmlab.tasks.classify import ClassifyTask
from lmlab.tasks.lm import LMTask
from lmlab.tasks.mlm import MLMTask
from lmlab.tasks.translation import TranslationTask

SHIPPED = {
    "configs/gpt_shakespeare.py": LMTask,
    "configs/bert_shakespeare.py": MLMTask,
    "configs/bert_classify_shakespeare.py": ClassifyTask,
    "configs/translate_en_fr.py": TranslationTask,
}


@pytest.mark.parametrize("path, cls", list(SHIPPED.items()))
def test_shipped_configs_name_their_task(path, cls):
    assert type(get_task(config_lib.load(path))) is cls


@pytest.mark.parametrize("overrides, words", [
    (["--config.task=mlm"], "task 'mlm' trains model.family bert, not 'gpt'"),
    (["--config.task=translate"], "task 'translate' trains model.family encdec, not 'gpt'"),
    (["--config.task=ppo"], "config key 'task' must be one of lm, mlm, classify, translate, sft, dpo, reward; got 'ppo'"),
])
def test_wrong_or_unknown_task_is_one_line(overrides, words):
    with pytest.raises(config_lib.ConfigError) as info:
        get_task(config_lib.load("configs/gpt_shakespeare.py", overrides))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_classifier_is_chosen_by_the_task_not_by_n_classes():
    with pytest.raises(config_lib.ConfigError, match="must be > 0 for task=classify and 0 otherwise"):
        config_lib.load("configs/bert_classify_shakespeare.py", ["--config.task=mlm"])
    with pytest.raises(config_lib.ConfigError, match="n_classes.*task=classify"):
        config_lib.load("configs/bert_shakespeare.py", ["--config.task=classify"])


def test_distill_teacher_on_a_task_that_does_not_distil_is_refused():
    config = config_lib.load("configs/bert_shakespeare.py", ["--config.distill.teacher=runs/x"])
    with pytest.raises(config_lib.ConfigError, match="task 'mlm' does not distil"):
        get_task(config)


@pytest.mark.parametrize("path, task", [
    ("configs/gpt_shakespeare.py", "lm"), ("configs/bert_shakespeare.py", "mlm"),
    ("configs/bert_classify_shakespeare.py", "classify"), ("configs/translate_en_fr.py", "translate"),
])
def test_run_directories_without_a_task_key_infer_it_from_the_family(tmp_path, path, task):
    saved = config_lib.load(path).to_dict()
    del saved["task"], saved["distill"]  # as written before these keys existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = config_lib.load_run_config(tmp_path)
    assert loaded.task == task and loaded.distill.teacher == ""
    assert type(get_task(loaded)) is SHIPPED[path]
