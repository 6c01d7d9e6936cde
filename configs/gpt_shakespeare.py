"""The main job: a ~1M-parameter GPT pretrained on Shakespeare in about five CPU minutes."""

from configs import base


def get_config():
    c = base.get_config()
    return c
