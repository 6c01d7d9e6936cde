"""A multiple-choice set from WordNet 3.0 (Debian's `wordnet-base`): which word has this meaning?

    PYTHONPATH=. python -m lmlab.data.wordnet --out wordnet_choices.jsonl [--n 500] [--seed 0]

Each question gives the gloss of a word's most frequent sense (WordNet lists senses by frequency
in its sense-tagged corpus) and four words of the same part of speech; lines are the format of
`lmlab eval RUN --choices`:

    {"question": "Question: Which word means \"a domesticated carnivorous mammal ...\"?\\nAnswer:",
     "choices": ["dog", "pencil", "harbor", "tribe"], "answer": 0}

Words: single lower-case words of 3-12 letters whose senses occur in the tagged corpus (common
words); a gloss that contains the word (or its first five letters) is skipped as a give-away;
distractors are other such words of the same part of speech outside the answer's synset. The
package is fetched once with `apt-get download` (no root needed) into <lmlab cache>/downloads and
unpacked with `dpkg-deb -x` into <lmlab cache>/wordnet. Licence: WordNet 3.0 licence (Princeton
University, BSD-like: use, copy, modify and distribute with the copyright notice), see
<lmlab cache>/wordnet/usr/share/doc/wordnet-base/copyright.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import re
import subprocess
import sys

from lmlab.data.cache import cache_dir

PACKAGE = "wordnet-base"
PARTS_OF_SPEECH = ("noun", "verb", "adj")
N_CHOICES = 4
_WORD = re.compile(r"[a-z]{3,12}")


@dataclasses.dataclass(frozen=True)
class Sense:
    word: str
    gloss: str
    synonyms: frozenset[str]  # every word of the synset, the answer included


def wordnet_dir(cache_root: pathlib.Path | None = None) -> pathlib.Path:
    """The unpacked package's data folder (usr/share/wordnet), downloaded and unpacked once."""
    root = cache_root or cache_dir()
    unpacked = root / "wordnet"
    data = unpacked / "usr" / "share" / "wordnet"
    if (data / "data.noun").is_file():
        return data
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        _run(["apt-get", "download", PACKAGE], cwd=downloads)
        debs = sorted(downloads.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise OSError(f"apt-get download {PACKAGE} left no .deb in {downloads}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)])
    return data


def _run(argv: list[str], cwd: pathlib.Path | None = None) -> None:
    try:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise OSError(f"{argv[0]} not found: fetching {PACKAGE} needs a Debian-based system "
                      f"(or copy {PACKAGE}_*.deb into {cwd or 'the lmlab cache downloads folder'})") from None
    except subprocess.CalledProcessError as error:
        last = (error.stderr or error.stdout or "").strip().splitlines()
        raise OSError(f"{' '.join(argv)} failed: {last[-1] if last else f'exit {error.returncode}'}") from None


def read_senses(data: pathlib.Path, pos: str) -> list[Sense]:
    """The most frequent sense of every common single word of `pos`, in the index's order."""
    glosses = {}
    for line in (data / f"data.{pos}").read_text(encoding="utf-8").splitlines():
        if line[:1].isdigit():  # the licence header lines start with spaces
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            n_words = int(parts[3], 16)
            words = frozenset(re.sub(r"\(.*\)$", "", w).lower() for w in parts[4:4 + 2 * n_words:2])
            glosses[parts[0]] = (gloss.split('; "')[0].strip(), words)
    senses = []
    for line in (data / f"index.{pos}").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or line.startswith(" ") or not _WORD.fullmatch(parts[0]):
            continue
        n_pointers = int(parts[3])
        tagged_senses, first_offset = int(parts[5 + n_pointers]), parts[6 + n_pointers]
        gloss, words = glosses[first_offset]
        if tagged_senses >= 1 and len(gloss.split()) >= 3 and not _gives_away(parts[0], gloss):
            senses.append(Sense(parts[0], gloss, words))
    return senses


def _gives_away(word: str, gloss: str) -> bool:
    return word[:5] in gloss.lower()


def build_questions(senses_by_pos: dict[str, list[Sense]], n: int, seed: int = 0) -> list[dict]:
    """`n` questions, parts of speech in proportion to their words; deterministic for a seed."""
    rng = random.Random(seed)
    pool = [(pos, sense) for pos in sorted(senses_by_pos) for sense in senses_by_pos[pos]]
    if n > len(pool):
        raise ValueError(f"asked for {n} questions, but WordNet gives only {len(pool)} usable words")
    words_by_pos = {pos: [s.word for s in senses] for pos, senses in senses_by_pos.items()}
    questions = []
    for pos, sense in rng.sample(pool, n):
        others = [w for w in words_by_pos[pos] if w not in sense.synonyms]
        choices = rng.sample(others, N_CHOICES - 1)
        answer = rng.randrange(N_CHOICES)
        choices.insert(answer, sense.word)
        questions.append({"question": f'Question: Which word means "{sense.gloss}"?\nAnswer:',
                          "choices": choices, "answer": answer})
    return questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a WordNet multiple-choice set for `lmlab eval --choices`.")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    parser.add_argument("--n", type=int, default=500, help="questions (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        data = wordnet_dir()
        questions = build_questions({pos: read_senses(data, pos) for pos in PARTS_OF_SPEECH}, args.n, args.seed)
    except (OSError, ValueError) as error:
        print(f"lmlab: error: {error}", file=sys.stderr)
        return 1
    pathlib.Path(args.out).write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    print(json.dumps({"out": args.out, "questions": len(questions), "source": str(data), "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
