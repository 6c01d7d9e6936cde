"""A user's files as documents: text files, folders, globs, JSONL (plain and gzipped), and bad input."""

import gzip
import json

import pytest

from lmlab.data.text_files import is_path_spec, read_documents


def write_folder(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def test_a_folder_is_one_document_per_file_hidden_files_and_empty_ones_left_out(tmp_path):
    write_folder(tmp_path / "d", {"b.txt": "bee", "a.txt": "ay", "sub/c.md": "sea", ".hidden": "no",
                                  ".git/config": "no", "empty.txt": "  \n"})
    docs = read_documents(str(tmp_path / "d"))
    assert [(d.name, d.text, d.key) for d in docs] == [("a.txt", "ay", "a.txt"), ("b.txt", "bee", "b.txt"),
                                                       ("sub/c.md", "sea", "sub/c.md")]


def test_a_glob_picks_files_and_a_single_file_is_one_document(tmp_path):
    write_folder(tmp_path, {"x/a.txt": "one", "x/b.log": "two", "x/y/c.txt": "three"})
    assert [d.text for d in read_documents(str(tmp_path / "x" / "**" / "*.txt"))] == ["one", "three"]
    assert [d.text for d in read_documents(str(tmp_path / "x" / "b.log"))] == ["two"]


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
def test_jsonl_is_one_document_per_line_keyed_by_its_text(tmp_path, gz):
    lines = [json.dumps({"text": "first", "id": 1}), "", json.dumps({"text": "second\nline"})]
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    docs = read_documents(str(path))
    assert [(d.name, d.text, d.key) for d in docs] == [(f"{path.name}:1", "first", "first"),
                                                       (f"{path.name}:3", "second\nline", "second\nline")]


def test_jsonl_files_in_a_folder_are_read_by_line(tmp_path):
    write_folder(tmp_path / "d", {"a.jsonl": '{"text": "x"}\n{"text": "y"}\n', "b.txt": "z"})
    assert [d.name for d in read_documents(str(tmp_path / "d"))] == ["a.jsonl:1", "a.jsonl:2", "b.txt"]


def test_a_jsonl_line_without_text_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{"content": "no"}\n')
    with pytest.raises(ValueError, match=rf"^{path}:2: no \"text\" key"):
        read_documents(str(path))
    path.write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match=rf"^{path}:1: \"text\" is a int, not a string"):
        read_documents(str(path))


@pytest.mark.parametrize("data, what", [(b"abc\x00def", "a NUL byte at offset 3"),
                                        (b"caf\xe9 au lait", "byte 0xe9 at offset 3")])
def test_a_binary_file_is_an_error_naming_it(tmp_path, data, what):
    write_folder(tmp_path / "d", {"a.txt": "fine", "img.bin": data})
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'd' / 'img.bin'}: not .*{what}"):
        read_documents(str(tmp_path / "d"))


def test_empty_folder_missing_path_and_unmatched_glob_are_errors_naming_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"the folder {tmp_path / 'empty'} has no files"):
        read_documents(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        read_documents(str(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        read_documents(str(tmp_path / "*.txt"))
    write_folder(tmp_path / "blank", {"a.txt": "\n\n"})
    with pytest.raises(ValueError, match="every document is empty"):
        read_documents(str(tmp_path / "blank"))


def test_path_specs_are_told_from_corpus_names(tmp_path):
    assert not is_path_spec("shakespeare")
    assert all(is_path_spec(s) for s in ("data/x", "*.txt", "c.jsonl", "c.jsonl.gz", str(tmp_path)))
