"""Nearest tokens and analogies in a static embedding matrix, on hand-built vectors."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from flax import nnx

from lmlab import cli, neighbors
from lmlab import config as config_lib
from lmlab.interop import rundir
from lmlab.models import build_model
from lmlab.nn.linear import Embed, Quantization
from lmlab.tokenizers import CharTokenizer

TOK = CharTokenizer(sorted("abcdxyz "))  # ids 0-2 reserved (empty), then " ", "a", "b", ...
ID = {c: TOK.encode(c)[0] for c in "abcdxyz "}


def table_with(vectors: dict[str, list[float]], dim: int = 3) -> np.ndarray:
    table = np.zeros((TOK.vocab_size, dim), np.float32)
    table[:] = 0.01  # every other token: a tiny vector pointing along (1, 1, 1)
    for char, vector in vectors.items():
        table[ID[char]] = vector
    table[:3] = [1.0, 0.0, 0.0]  # pad/bos/eos point exactly at "a": must never be returned
    return table


def test_neighbors_by_cosine_exclude_the_word_and_empty_ids():
    table = table_with({"a": [1, 0, 0], "b": [2, 0.2, 0], "c": [0, 1, 0], "d": [0.5, 0.5, 0]})
    query, found = neighbors.neighbors(TOK, table, "a", k=3)
    assert query.ids == (ID["a"],)
    assert [i for i, _ in found] == [ID["b"], ID["d"], ID[" "]]  # then ties: the lowest id
    assert found[0][1] == pytest.approx(2 / np.hypot(2, 0.2)) and found[1][1] == pytest.approx(np.sqrt(0.5))


def test_a_word_of_several_tokens_is_their_mean():
    table = table_with({"a": [1, 0, 0], "b": [0, 1, 0], "c": [1, 1, 0]})
    query, found = neighbors.neighbors(TOK, table, "ab", k=1)
    assert query.ids == (ID["a"], ID["b"]) and found[0][0] == ID["c"] and found[0][1] == pytest.approx(1.0)


def test_analogy_is_a_minus_b_plus_c():
    # king - man + woman: "x" - "y" + "z" lands exactly on "d"
    table = table_with({"x": [1, 1, 0], "y": [1, 0, 0], "z": [0, 0, 1], "d": [0, 1, 1]})
    table[ID["y"]] /= np.linalg.norm(table[ID["y"]])
    queries, found = neighbors.analogy(TOK, table, "x", "y", "z", k=2)
    assert [q.ids for q in queries] == [(ID["x"],), (ID["y"],), (ID["z"],)]
    assert found[0][0] == ID["d"] and all(i not in (ID["x"], ID["y"], ID["z"]) for i, _ in found)
    with pytest.raises(ValueError, match="need a word"):
        neighbors.lookup(TOK, table, "  ")


def test_embedding_table_of_a_model():
    embed = Embed(4, 2, rngs=nnx.Rngs(params=0))
    embed.embedding[...] = np.eye(4, 2, dtype=np.float32) * 0.5
    model = types.SimpleNamespace(embed=embed)
    np.testing.assert_array_equal(neighbors.embedding_table(model), np.eye(4, 2, dtype=np.float32) * 0.5)
    embed.quantize(Quantization("int8"))  # a quantized run: the dequantized table (each row's max is 127 steps)
    assert embed.embedding is None
    np.testing.assert_allclose(neighbors.embedding_table(model), np.eye(4, 2, dtype=np.float32) * 0.5, rtol=1e-6)


def test_cli_embed_neighbors_and_analogy(tmp_path, capsys):
    config = config_lib.load("configs/base.py", ["--config.model.n_layers=1", "--config.model.d_model=16",
                                                 "--config.model.n_heads=2", "--config.model.n_kv_heads=2",
                                                 "--config.model.d_ff=32", "--config.tokenizer.kind=char"])
    model = build_model(config.model, TOK.vocab_size, seed=0)
    run = rundir.write_run(tmp_path / "run", config, TOK, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert cli.main(["embed", str(run), "--neighbors", "a", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    table = np.asarray(model.embed.embedding[...])
    expected = [i for i, _ in neighbors.neighbors(TOK, table, "a", 3)[1]]
    assert [n["id"] for n in result["nearest"]] == expected and result["queries"] == [{"word": "a", "ids": [ID["a"]]}]
    assert cli.main(["embed", str(run), "--analogy", "a", "b", "c", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["a: 'a'", "b: 'b'", "c: 'c'"] and len(lines) == 5
    assert cli.main(["embed", str(run), "--neighbors", "a", "--text", "x"]) == 2
    assert "separate views" in capsys.readouterr().err
    assert cli.main(["embed", str(run)]) == 2
    assert "need --text" in capsys.readouterr().err
