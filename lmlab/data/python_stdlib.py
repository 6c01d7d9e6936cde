"""The ``python_stdlib`` corpus: Python source code of the standard library (licence: PSF).

The `.py` files of the interpreter that runs lmlab (`sysconfig`'s "stdlib" folder), read in place:
nothing is downloaded, so the corpus is the same for every run on one Python version (and differs
between versions; the corpus name says which). Left out: the test suites (`test/`, `tests/`,
`idle_test/`: thousands of generated and deliberately broken files), installed packages
(`site-packages`), the build's own `config-*` folder and `_sysconfigdata_*` files (paths of the
machine that built Python), and the few files that are not UTF-8.

Held out by module: whole top-level modules (`os.py`) and packages (`json/`, every file in it), taken
in the order of the sha256 of their names until they hold HELD_OUT_PERCENT of the bytes, so
validation is code from modules never seen in training, not other functions of the same module.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import sysconfig

from lmlab.data.corpora import HELD_OUT_PERCENT, Corpus, register_corpus

log = logging.getLogger("lmlab")

SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_dir() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def module_of(relative: pathlib.Path) -> str:
    """`json/decoder.py` -> "json"; `os.py` -> "os"."""
    return relative.parts[0].removesuffix(".py")


def source_files(root: pathlib.Path) -> list[pathlib.Path]:
    """The `.py` files under `root` that make up the corpus, as sorted relative paths."""
    files = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if SKIPPED_DIRS & set(relative.parts[:-1]) or relative.parts[0].startswith("config-"):
            continue
        if relative.name.startswith("_sysconfigdata"):
            continue
        files.append(relative)
    return sorted(files)


def _module_hash(module: str) -> int:
    return int.from_bytes(hashlib.sha256(module.encode()).digest()[:8], "big")


def held_out_modules(sizes: dict[str, int], percent: int = HELD_OUT_PERCENT) -> set[str]:
    """Modules in the order of their names' sha256, taken until they hold `percent` of the bytes: a
    fixed share of held-out text whatever the sizes (a hash bucket per module would hold out
    anything from 3% to 30%, as a few packages (idlelib, email, asyncio) are much larger than the rest)."""
    held, total, goal = set(), 0, sum(sizes.values()) * percent / 100
    for module in sorted(sizes, key=_module_hash):
        if total >= goal:
            break
        held.add(module)
        total += sizes[module]
    return held


def read_sources(root: pathlib.Path) -> dict[str, str]:
    """{relative path: source} of the non-empty UTF-8 files of `source_files`."""
    sources, skipped = {}, 0
    for relative in source_files(root):
        try:
            text = (root / relative).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if text.strip():  # not the empty __init__.py files
            sources[relative.as_posix()] = text
    if skipped:
        log.info("python_stdlib: %d file(s) under %s that are not UTF-8 left out", skipped, root)
    return sources


def stdlib_corpus(root: pathlib.Path, name: str = "python_stdlib") -> Corpus:
    sources = read_sources(root)
    sizes: dict[str, int] = {}
    for relative, text in sources.items():
        module = module_of(pathlib.PurePosixPath(relative))
        sizes[module] = sizes.get(module, 0) + len(text.encode("utf-8"))
    held = held_out_modules(sizes)
    train = [r for r in sources if module_of(pathlib.PurePosixPath(r)) not in held]
    val = [r for r in sources if module_of(pathlib.PurePosixPath(r)) in held]
    if not train or not val:
        raise ValueError(f"{root}: too few Python sources for both splits of the {name} corpus")
    return Corpus(name, tuple(sources[r] for r in train), tuple(sources[r] for r in val), tuple(train), tuple(val))


@register_corpus("python_stdlib")
def python_stdlib() -> Corpus:
    return stdlib_corpus(stdlib_dir())
