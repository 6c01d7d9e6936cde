"""A labelled 2-D scatter plot as a PNG, with matplotlib when it is installed and without it otherwise.

Both draw the two axes at the same scale (a distance on the page is a distance in the data;
stretching each axis to fill the frame can draw the least similar pair closest), with a title,
axis labels and one text label per point. lmlab does not depend on matplotlib: the fallback draws
with a 3x5 pixel font (upper case, digits, common punctuation) on a white canvas and writes the
PNG itself: zlib-compressed scanlines in IDAT, per the PNG specification.
"""

from __future__ import annotations

import pathlib
import struct
import zlib
from collections.abc import Sequence

import numpy as np

BAR_MARGIN = 24  # render_bars: px around the bars
WIDTH, HEIGHT, MARGIN, DOT, SCALE = 640, 520, 48, 3, 2  # canvas px, border px, dot half-width px, font pixel
GLYPH_W, GLYPH_H = 4 * SCALE, 5 * SCALE                    # advance and height of one character, px

# 3x5 bitmaps, one row per string, "#" = ink. Lower case is drawn as upper case.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "J": ("..#", "..#", "..#", "#.#", ".#."),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"), "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"), "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": (".#.", "#.#", "#.#", "#.#", ".#."), "P": ("##.", "#.#", "##.", "#..", "#.."),
    "Q": (".#.", "#.#", "#.#", "##.", ".##"), "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": (".##", "#..", ".#.", "..#", "##."), "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "###", "###", "#.#"), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."), "Z": ("###", "..#", ".#.", "#..", "###"),
    ".": ("...", "...", "...", "...", ".#."), ",": ("...", "...", "...", ".#.", "#.."),
    "'": (".#.", ".#.", "...", "...", "..."), '"': ("#.#", "#.#", "...", "...", "..."),
    "-": ("...", "...", "###", "...", "..."), "?": ("##.", "..#", ".#.", "...", ".#."),
    "!": (".#.", ".#.", ".#.", "...", ".#."), ":": ("...", ".#.", "...", ".#.", "..."),
    "(": ("..#", ".#.", ".#.", ".#.", "..#"), ")": ("#..", ".#.", ".#.", ".#.", "#.."),
    "%": ("#.#", "..#", ".#.", "#..", "#.#"), "/": ("..#", "..#", ".#.", "#..", "#.."),
    "=": ("...", "###", "...", "###", "..."), "_": ("...", "...", "...", "...", "###"),
}
_COLORS = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def shorten(text: str, width: int = 32) -> str:
    """One line of at most `width` characters: whitespace collapsed, cut at a word with '...'."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 3]
    if " " in cut[width // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "..."


def write_png(path: str | pathlib.Path, rgb_HW3: np.ndarray) -> None:
    """An 8-bit RGB PNG: signature, IHDR, one IDAT of filter-0 scanlines, IEND."""
    rgb_HW3 = np.ascontiguousarray(rgb_HW3, np.uint8)
    height, width, _ = rgb_HW3.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rgb_HW3.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    pathlib.Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                   + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9)) + chunk(b"IEND", b""))


def to_pixels(xy_N2: np.ndarray, width: int = WIDTH, height: int = HEIGHT, margin: int = MARGIN) -> np.ndarray:
    """Data coordinates -> integer pixel positions (y up), one scale for both axes, centred."""
    xy_N2 = np.asarray(xy_N2, np.float64)
    low, high = xy_N2.min(0), xy_N2.max(0)
    spans = high - low
    fits = np.array([width - 2 * margin, height - 2 * margin], np.float64) / np.where(spans > 0, spans, np.inf)
    scale = fits.min() if np.isfinite(fits.min()) else 0.0
    centre = (low + high) / 2
    px = width / 2 + (xy_N2[:, 0] - centre[0]) * scale
    py = height / 2 - (xy_N2[:, 1] - centre[1]) * scale
    return np.stack([px, py], 1).round().astype(int)


def text_mask(text: str) -> np.ndarray:
    """[GLYPH_H, GLYPH_W * len(text)] bool: the text in the 3x5 font (unknown characters blank)."""
    mask = np.zeros((GLYPH_H, GLYPH_W * len(text)), bool)
    for i, ch in enumerate(text.upper()):
        for r, row in enumerate(_GLYPHS.get(ch, ())):
            for c, cell in enumerate(row):
                if cell == "#":
                    mask[r * SCALE:(r + 1) * SCALE, (i * 4 + c) * SCALE:(i * 4 + c + 1) * SCALE] = True
    return mask


def _paste(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, colour=0) -> None:
    """Ink `mask` with its top-left corner at (x, y), clipped to the canvas."""
    h, w = mask.shape
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, canvas.shape[0]), min(x + w, canvas.shape[1])
    if y1 > y0 and x1 > x0:
        region = canvas[y0:y1, x0:x1]
        region[mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour


def render_scatter(xy_N2: np.ndarray, labels: Sequence[str], *, title: str = "",
                   axis_labels: tuple[str, str] = ("", "")) -> np.ndarray:
    """[HEIGHT, WIDTH, 3] uint8: frame, title, axis labels, one coloured dot per point with its label
    to the right (to the left where it would leave the canvas)."""
    canvas = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    lo_x, hi_x, lo_y, hi_y = MARGIN // 2, WIDTH - MARGIN // 2, MARGIN // 2 + 8, HEIGHT - MARGIN // 2
    canvas[lo_y, lo_x:hi_x] = canvas[hi_y, lo_x:hi_x] = canvas[lo_y:hi_y, lo_x] = canvas[lo_y:hi_y + 1, hi_x] = 160
    _paste(canvas, text_mask(title), (WIDTH - GLYPH_W * len(title)) // 2, 6)
    x_label, y_label = axis_labels
    _paste(canvas, text_mask(x_label), (WIDTH - GLYPH_W * len(x_label)) // 2, HEIGHT - GLYPH_H - 4)
    _paste(canvas, np.rot90(text_mask(y_label)), 4, (HEIGHT + GLYPH_W * len(y_label)) // 2 - GLYPH_W * len(y_label))
    for i, (x, y) in enumerate(to_pixels(xy_N2)):
        canvas[max(y - DOT, 0):y + DOT + 1, max(x - DOT, 0):x + DOT + 1] = _COLORS[i % len(_COLORS)]
        mask = text_mask(labels[i])
        left = x + DOT + 3 if x + DOT + 3 + mask.shape[1] <= WIDTH - 2 else x - DOT - 3 - mask.shape[1]
        _paste(canvas, mask, left, y - DOT - GLYPH_H)
    return canvas


def scatter_png(path: str | pathlib.Path, xy_N2: np.ndarray, *, labels: Sequence[str], title: str = "",
                axis_labels: tuple[str, str] = ("", "")) -> None:
    try:
        import matplotlib
    except ImportError:
        write_png(path, render_scatter(xy_N2, labels, title=title, axis_labels=axis_labels))
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=80)
    ax.scatter(xy_N2[:, 0], xy_N2[:, 1], c=[_COLORS[i % len(_COLORS)] / 255 for i in range(len(xy_N2))])
    for (x, y), label in zip(xy_N2, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    ax.set_title(title)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_bars(values_GS: np.ndarray, width: int = 640, height: int = 360) -> np.ndarray:
    """[height, width, 3] uint8: one group of bars per row of `values_GS`, one colour per column,
    each bar numbered with its column index (the legend is the caller's table)."""
    values_GS = np.asarray(values_GS, np.float64)
    n_groups, n_series = values_GS.shape
    canvas = np.full((height, width, 3), 255, np.uint8)
    base, top = height - BAR_MARGIN, BAR_MARGIN
    canvas[base, BAR_MARGIN // 2:width - BAR_MARGIN // 2] = 160
    group_width = (width - BAR_MARGIN) / n_groups
    bar = max(int(group_width / (n_series + 1)), 1)
    peak = max(values_GS.max(), 1e-12)
    for g in range(n_groups):
        for s in range(n_series):
            x0 = int(BAR_MARGIN // 2 + g * group_width + (s + 0.5) * bar)
            y0 = int(base - (base - top) * values_GS[g, s] / peak)
            canvas[y0:base, x0:x0 + bar - 1] = _COLORS[s % len(_COLORS)]
            _paste(canvas, text_mask(str(s)), x0, y0 - GLYPH_H - SCALE)
    return canvas


def bar_png(path: str | pathlib.Path, values_GS: np.ndarray, *, groups: Sequence[str], series: Sequence[str],
            title: str = "") -> None:
    """Grouped bar chart: matplotlib with labels and legend when installed, else `render_bars`."""
    try:
        import matplotlib
    except ImportError:
        write_png(path, render_bars(values_GS))
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values_GS = np.asarray(values_GS, np.float64)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=80)
    width = 0.8 / len(series)
    for s, name in enumerate(series):
        ax.bar(np.arange(len(groups)) + (s - (len(series) - 1) / 2) * width, values_GS[:, s], width,
               label=name, color=_COLORS[s % len(_COLORS)] / 255)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
