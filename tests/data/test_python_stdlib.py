"""The python_stdlib corpus: which files, held out by whole module, deterministic."""

import hashlib
import pathlib

from lmlab.data import get_corpus
from lmlab.data.python_stdlib import held_out_modules, module_of, stdlib_corpus


def _write(root, files: dict):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)


def test_sources_skip_tests_installed_packages_build_files_and_non_utf8(tmp_path):
    files = {f"mod{i}.py": f"x = {i}\n" * (i + 1) for i in range(30)}
    files.update({"pkg/__init__.py": "", "pkg/a.py": "a = 1\n", "pkg/sub/b.py": "b = 2\n",
                  "test/test_x.py": "bad", "pkg/tests/t.py": "bad", "site-packages/numpy/x.py": "bad",
                  "config-3.11-x86_64/makesetup.py": "bad", "_sysconfigdata__linux.py": "bad",
                  "latin1.py": b"# caf\xe9\n", "notes.txt": "not python"})
    _write(tmp_path, files)
    corpus = stdlib_corpus(tmp_path)
    names = set(corpus.train_names) | set(corpus.val_names)
    assert names == {f"mod{i}.py" for i in range(30)} | {"pkg/a.py", "pkg/sub/b.py"}
    assert not set(corpus.train_names) & set(corpus.val_names)
    # whole modules: a package's files are all in one split
    assert ("pkg/a.py" in corpus.val_names) == ("pkg/sub/b.py" in corpus.val_names)


def test_held_out_modules_are_taken_in_hash_order_until_they_hold_the_share():
    sizes = {f"m{i}": 100 + i for i in range(50)}
    held = held_out_modules(sizes, percent=10)
    order = sorted(sizes, key=lambda m: hashlib.sha256(m.encode()).digest()[:8])
    goal, total, want = 0.1 * sum(sizes.values()), 0, set()
    for module in order:  # the naive rule, spelled out
        if total >= goal:
            break
        want.add(module)
        total += sizes[module]
    assert held == want
    assert goal <= sum(sizes[m] for m in held) < goal + max(sizes.values())
    assert module_of(pathlib.PurePosixPath("json/decoder.py")) == "json"


def test_the_real_stdlib_is_split_by_module_and_deterministically():
    corpus = get_corpus("python_stdlib")
    assert get_corpus("python_stdlib").val_names == corpus.val_names
    train_modules = {name.split("/")[0] for name in corpus.train_names}
    val_modules = {name.split("/")[0] for name in corpus.val_names}
    assert not train_modules & val_modules
    assert "os.py" in corpus.train_names + corpus.val_names and "argparse.py" in train_modules | val_modules
    assert not any(name.startswith(("test/", "site-packages/")) for name in corpus.train_names + corpus.val_names)
    val_bytes, total = len(corpus.val_text.encode()), len(corpus.train_text.encode()) + len(corpus.val_text.encode())
    assert 0.1 <= val_bytes / total < 0.25
