"""A tiny experiment file written into a temporary repository layout (tmp/experiments/NAME.py),
its base config the repository's main-job config."""

import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "gpt_shakespeare.py"


@pytest.fixture
def write_experiment(tmp_path):
    def write(body: str, name: str = "tiny_ablation") -> pathlib.Path:
        path = tmp_path / "experiments" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"from lmlab.experiment import TINY, Derive, Experiment, HeldOutBpb, Size, DecodeSpeed\nBASE = {str(BASE)!r}\n"
        path.write_text(header + textwrap.dedent(body))
        return path

    return write
