"""all-MiniLM-L6-v2 imported onto lmlab's BERT: the same WordPiece ids and sentence embeddings as
sentence-transformers (HF tokenizers + transformers BertModel, PyTorch float32)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab import cli, embed
from lmlab.interop import minilm as minilm_lib
from lmlab.interop.safetensors_file import read_safetensors


def test_config_is_a_post_norm_exact_gelu_bert(minilm):
    config, params, tokenizer = minilm
    m = config.model
    assert (m.family, m.n_layers, m.d_model, m.n_heads, m.d_ff, m.max_len) == ("bert", 6, 384, 12, 1536, 512)
    assert (m.prenorm, m.mlp, m.norm, m.positions, m.type_vocab_size) == (False, "gelu_exact", "layernorm", "learned", 2)
    assert m.norm_eps == 1e-12
    assert config.data.seq_len == 256  # sentence-transformers' max_seq_length
    assert tokenizer.kind == "wordpiece" and tokenizer.vocab_size == 30522
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id) == (0, 100, 101, 102, 103)


def test_wordpiece_ids_match_hf_tokenizers(minilm, minilm_reference, reference_info):
    _, _, tokenizer = minilm
    for i, text in enumerate(reference_info["minilm"]["texts"]):
        ids = [tokenizer.bos_id] + tokenizer.encode(text) + [tokenizer.eos_id]
        assert ids == minilm_reference[f"tok/{i}"].tolist(), repr(text)


def test_sentence_embeddings_match_sentence_transformers(minilm, minilm_model, minilm_reference, reference_info):
    config, _, tokenizer = minilm
    sentences = reference_info["minilm"]["sentences"]
    ours = embed.sentence_embeddings(minilm_model, tokenizer, sentences, config.data.seq_len)
    ref = minilm_reference["sentence_embeddings"]
    cosines = (ours * ref).sum(-1)
    assert cosines.min() >= 0.9999, cosines
    # Every sentence ranks the others in the same order.
    ours_sim, ref_sim = ours @ ours.T, ref @ ref.T
    np.testing.assert_array_equal(np.argsort(-ours_sim, axis=1), np.argsort(-ref_sim, axis=1))
    np.testing.assert_allclose(ours_sim, ref_sim, atol=1e-4)


def test_token_embeddings_match(minilm, minilm_model, minilm_reference, reference_info):
    """Un-pooled last hidden states, position by position (the reference keeps the first four)."""
    config, _, tokenizer = minilm
    sentences = reference_info["minilm"]["sentences"]  # all of them: the same batch shape, no recompile
    encoded = embed.encode_texts(minilm_model, tokenizer, sentences, config.data.seq_len)
    for i in range(4):
        ref = minilm_reference[f"token_embeddings/{i}"]
        np.testing.assert_allclose(encoded.hidden_BTD[i, : len(ref)], ref, atol=1e-4, err_msg=sentences[i])


def test_apple_in_context(minilm, minilm_model, reference_info):
    """The fruit occurrences are closer to each other than to the company ones."""
    config, _, tokenizer = minilm
    sentences = reference_info["minilm"]["sentences"]  # 0, 1: the fruit; 2, 3: the company
    occurrences, vectors = embed.word_embeddings(minilm_model, tokenizer, sentences, "apple", config.data.seq_len)
    assert [o.text for o in occurrences] == [0, 1, 2, 3]
    sim = vectors @ vectors.T
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3]) and sim[2, 3] > max(sim[2, 0], sim[2, 1])


def test_import_then_embed_from_the_command_line(minilm, minilm_reference, reference_info, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["import", "minilm", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert json.loads((run_dir / "config.json").read_text())["model"]["family"] == "bert"

    sentences = reference_info["minilm"]["sentences"]
    argv = ["embed", str(run_dir), "--json", "--word", "apple", "--export", str(tmp_path / "proj")]
    for sentence in sentences:
        argv += ["--text", sentence]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    ours = np.asarray(result["embeddings"])
    ref = minilm_reference["sentence_embeddings"][: len(sentences)]
    assert (ours * ref).sum(-1).min() >= 0.9999
    np.testing.assert_allclose(result["similarity"], ours @ ours.T, atol=1e-5)
    assert len(result["word"]["occurrences"]) == 4

    vectors = (tmp_path / "proj" / "vectors.tsv").read_text().splitlines()
    assert len(vectors) == len(sentences) and len(vectors[0].split("\t")) == 384
    assert (tmp_path / "proj" / "metadata.tsv").read_text().splitlines() == sentences
    assert (tmp_path / "proj" / "pca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embed_refuses_a_decoder_run(tiny_gguf, tmp_path, capsys):
    run_dir = tmp_path / "gpt"
    assert cli.main(["import", "smollm2", "--from", str(tiny_gguf[0]), "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert cli.main(["embed", str(run_dir), "--text", "hello"]) == 1
    assert "need an encoder (BERT-family) run" in capsys.readouterr().err


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        read_safetensors(path)


def test_other_architecture_is_refused(minilm):
    with pytest.raises(ValueError, match="model_type 'roberta' is not supported; expected 'bert'"):
        minilm_lib.model_config({"model_type": "roberta"}, "config.json")
    with pytest.raises(ValueError, match="hidden_act 'relu' is not supported"):
        minilm_lib.model_config({"model_type": "bert", "hidden_act": "relu"}, "config.json")


def test_safetensors_reader_round_trip(tmp_path):
    import struct

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64)}
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        data = array.tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[str(array.dtype)], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    read = read_safetensors(path)
    for name, array in arrays.items():
        np.testing.assert_array_equal(read[name], array)


@pytest.mark.parametrize("kind", ["not_a_wheel", "roberta_folder"])
def test_cli_reports_a_wrong_source_in_one_line(kind, tmp_path, capsys):
    if kind == "not_a_wheel":
        source = tmp_path / "model.whl"
        source.write_bytes(b"GGUF but not a zip")
        expected = "not a wheel (zip) file"
    else:
        source = tmp_path / "model"
        source.mkdir()
        (source / "config.json").write_text(json.dumps({"model_type": "roberta"}))
        expected = "model_type 'roberta' is not supported"
    assert cli.main(["import", "minilm", "--from", str(source), "--out", str(tmp_path / "run")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: ") and expected in lines[0]
    assert not (tmp_path / "run").exists()
