"""ChatML formatting, embedding helpers and the PNG writer: no model needed."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from lmlab import embed, plot
from lmlab.chat import ChatML, ChatTemplateError, chatml_from_template
from tests.interop.tiny_gguf import TINY_TEMPLATE


def test_chatml_from_a_jinja_template():
    chat = chatml_from_template(TINY_TEMPLATE)
    assert chat.default_system == "You are tiny."
    assert chat.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are tiny.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat.render(with_system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")


def test_templates_that_are_not_chatml_are_refused():
    with pytest.raises(ChatTemplateError, match="no chat template"):
        chatml_from_template(None)
    with pytest.raises(ChatTemplateError, match="not ChatML"):
        chatml_from_template("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
    with pytest.raises(ChatTemplateError, match="role"):
        ChatML().render([{"role": "robot", "content": "beep"}])


def test_mean_pool_ignores_padding_and_normalizes():
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], np.float32)
    mask = np.array([[True, True, False]])
    np.testing.assert_allclose(embed.mean_pool(hidden, mask), [[2.0, 0.0]])
    np.testing.assert_allclose(embed.l2_normalize(np.array([[3.0, 4.0]])), [[0.6, 0.8]])


def test_find_word_matches_whole_piece_sequences():
    encoded = embed.Encoded(ids=[[101, 7, 8, 9, 102], [101, 9, 7, 8, 102]], hidden_BTD=None, mask_BT=None)
    found = embed.find_word(encoded, [7, 8])
    assert [(o.text, o.start, o.end) for o in found] == [(0, 1, 3), (1, 2, 4)]


def test_pca_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    x = np.zeros((50, 5))
    x[:, 3] = rng.standard_normal(50) * 10
    x[:, 1] = rng.standard_normal(50)
    coords = embed.pca_2d(x)
    assert coords.shape == (50, 2)
    assert abs(np.corrcoef(coords[:, 0], x[:, 3])[0, 1]) > 0.999
    assert abs(np.corrcoef(coords[:, 1], x[:, 1])[0, 1]) > 0.99
    assert coords[:, 0].var() > coords[:, 1].var()


def _read_png(data: bytes) -> np.ndarray:
    """Minimal decoder for what write_png writes (8-bit RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_writer_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    plot.write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(_read_png((tmp_path / "x.png").read_bytes()), image)


def test_scatter_plot_draws_every_point(tmp_path):
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.2]])
    canvas = plot.render_scatter(xy, ["0", "1", "2"])
    for colour in plot._COLORS[:3]:
        assert (canvas == colour).all(-1).sum() == (2 * plot.DOT + 1) ** 2


def test_scatter_uses_one_scale_for_both_axes():
    """Stretching each axis to fill the frame drew (0,0)-(1,0.05) as far apart as the most
    different pair; on one scale pixel distances are data distances times a constant."""
    xy = np.array([[0.0, 0.0], [1.0, 0.05], [1.0, -0.05], [0.3, 0.02]])
    px = plot.to_pixels(xy)
    data = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    pixels = np.linalg.norm(px[:, None] - px[None], axis=-1)
    ratios = pixels[data > 0] / data[data > 0]
    assert ratios.max() / ratios.min() < 1.06  # integer pixels round short distances
    assert px[:, 0].min() == plot.MARGIN and px[:, 0].max() == plot.WIDTH - plot.MARGIN  # the wide axis fills
    assert abs(px[1, 1] - px[2, 1]) == round(0.1 * (plot.WIDTH - 2 * plot.MARGIN))


def test_scatter_draws_title_axis_labels_and_text_labels():
    canvas = plot.render_scatter(np.array([[0.0, 0.0], [1.0, 1.0]]), ["0: TO BE", "1: NOT"], title="PCA",
                                 axis_labels=("PC1: 60%", "PC2: 40%"))
    ink = (canvas == 0).all(-1)

    def found(mask):
        h, w = mask.shape
        return any((ink[y:y + h, x:x + w] == mask).all() for y in range(canvas.shape[0] - h)
                   for x in range(canvas.shape[1] - w) if ink[y:y + h, x:x + w].sum() == mask.sum())

    for text in ("PCA", "0: TO BE", "PC1: 60%"):
        assert found(plot.text_mask(text)), text
    assert found(np.rot90(plot.text_mask("PC2: 40%")))  # the y label reads bottom to top
    assert plot.text_mask("to be").tolist() == plot.text_mask("TO BE").tolist()


def test_shorten_cuts_at_a_word():
    assert plot.shorten("I  ate\tan apple.") == "I ate an apple."
    assert plot.shorten("The new iPhone has a faster chip than the old one", 32) == "The new iPhone has a faster..."
    assert len(plot.shorten("x" * 100, 32)) == 32


def test_pca_explained_variance_equals_the_covariance_eigenvalues():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    coords, explained = embed.pca_2d_explained(x)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(explained, eigenvalues[:2] / eigenvalues.sum(), rtol=1e-6)
    np.testing.assert_allclose(coords.var(0, ddof=1), eigenvalues[:2], rtol=1e-4)
