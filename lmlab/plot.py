"""A labelled 2-D scatter plot as a PNG, with matplotlib when it is installed and without it otherwise.

lmlab does not depend on matplotlib. The fallback draws the points (numbered with a 3x5 pixel
digit font; the numbers index the metadata file written beside the plot) on a white canvas and
writes the PNG itself: zlib-compressed scanlines in IDAT, per the PNG specification.
"""

from __future__ import annotations

import pathlib
import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIZE, MARGIN, DOT, SCALE = 480, 40, 3, 2  # canvas px, border px, dot half-width px, font pixel size

# 3x5 bitmaps of 0-9, one row per string, "#" = ink.
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
}
_COLORS = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


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


def _to_pixels(xy_N2: np.ndarray) -> np.ndarray:
    """Data coordinates -> integer pixel positions inside the margins (y up)."""
    low, high = xy_N2.min(0), xy_N2.max(0)
    span = np.where(high - low > 0, high - low, 1.0)
    unit = (xy_N2 - low) / span
    px = MARGIN + unit[:, 0] * (SIZE - 2 * MARGIN)
    py = SIZE - MARGIN - unit[:, 1] * (SIZE - 2 * MARGIN)
    return np.stack([px, py], 1).round().astype(int)


def _draw_text(canvas: np.ndarray, x: int, y: int, text: str) -> None:
    for i, ch in enumerate(text):
        rows = _DIGITS.get(ch)
        if rows is None:
            continue
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                if cell == "#":
                    y0, x0 = y + r * SCALE, x + (i * 4 + c) * SCALE
                    canvas[max(y0, 0):y0 + SCALE, max(x0, 0):x0 + SCALE] = 0


def render_scatter(xy_N2: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """[SIZE, SIZE, 3] uint8: axes box, one coloured dot per point, its label to the upper right."""
    canvas = np.full((SIZE, SIZE, 3), 255, np.uint8)
    lo, hi = MARGIN // 2, SIZE - MARGIN // 2
    canvas[lo, lo:hi] = canvas[hi, lo:hi] = canvas[lo:hi, lo] = canvas[lo:hi + 1, hi] = 160
    for i, (x, y) in enumerate(_to_pixels(np.asarray(xy_N2, np.float64))):
        canvas[max(y - DOT, 0):y + DOT + 1, max(x - DOT, 0):x + DOT + 1] = _COLORS[i % len(_COLORS)]
        _draw_text(canvas, x + DOT + 2, y - DOT - 5 * SCALE, labels[i])
    return canvas


def scatter_png(path: str | pathlib.Path, xy_N2: np.ndarray, *, labels: Sequence[str], title: str = "") -> None:
    try:
        import matplotlib
    except ImportError:
        write_png(path, render_scatter(xy_N2, labels))
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    ax.scatter(xy_N2[:, 0], xy_N2[:, 1], c=[_COLORS[i % len(_COLORS)] / 255 for i in range(len(xy_N2))])
    for (x, y), label in zip(xy_N2, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_title(title)
    fig.savefig(path)
    plt.close(fig)


def render_bars(values_GS: np.ndarray, width: int = 640, height: int = 360) -> np.ndarray:
    """[height, width, 3] uint8: one group of bars per row of `values_GS`, one colour per column,
    each bar numbered with its column index (the legend is the caller's table)."""
    values_GS = np.asarray(values_GS, np.float64)
    n_groups, n_series = values_GS.shape
    canvas = np.full((height, width, 3), 255, np.uint8)
    base, top = height - MARGIN, MARGIN
    canvas[base, MARGIN // 2:width - MARGIN // 2] = 160
    group_width = (width - MARGIN) / n_groups
    bar = max(int(group_width / (n_series + 1)), 1)
    peak = max(values_GS.max(), 1e-12)
    for g in range(n_groups):
        for s in range(n_series):
            x0 = int(MARGIN // 2 + g * group_width + (s + 0.5) * bar)
            y0 = int(base - (base - top) * values_GS[g, s] / peak)
            canvas[y0:base, x0:x0 + bar - 1] = _COLORS[s % len(_COLORS)]
            _draw_text(canvas, x0, y0 - 6 * SCALE, str(s))
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
