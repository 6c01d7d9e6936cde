"""Token-by-token decoding (lmlab.decode.stream) gives generate()'s tokens, one at a time."""

import jax
import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab.decode.sampling import generate
from lmlab.decode.stream import stream
from lmlab.models import build_model

TINY = ["model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=64",
        "model.max_len=64", "data.seq_len=32"]


@pytest.fixture(scope="module")
def model():
    config = config_lib.load("configs/gpt_shakespeare.py", TINY)
    return build_model(config.model, 50, seed=3)


@pytest.mark.parametrize("temperature, top_k", [(0.0, 0), (0.9, 5)])
def test_stream_equals_generate(model, temperature, top_k):
    prompt = [5, 9, 2, 33, 7]
    key = jax.random.key(11)
    expected = np.asarray(generate(model, [prompt], max_new_tokens=12, key=key, temperature=temperature,
                                   top_k=top_k))[0, len(prompt):].tolist()
    got = list(stream(model, prompt, max_new_tokens=12, key=key, temperature=temperature, top_k=top_k))
    assert got == expected


def test_stream_stops_after_a_stop_id(model):
    tokens = list(stream(model, [1, 2, 3], max_new_tokens=12, key=jax.random.key(0), temperature=0.0))
    stop = tokens[4]
    cut = list(stream(model, [1, 2, 3], max_new_tokens=12, key=jax.random.key(0), temperature=0.0, stop_ids=(stop,)))
    assert cut == tokens[:tokens.index(stop) + 1]


def test_stream_refuses_more_than_learned_positions_reach():
    config = config_lib.load("configs/gpt_shakespeare.py", TINY + ["model.positions=learned"])
    with pytest.raises(ValueError, match="exceeds model.max_len = 64"):
        next(stream(build_model(config.model, 50, seed=0), [1] * 60, max_new_tokens=10, key=jax.random.key(0)))
