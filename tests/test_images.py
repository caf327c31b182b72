"""Reading images safely (maskx/images.py): RGB, RGBA, gray and 16-bit become RGB, huge images are
downscaled with a note, bad uploads are clear errors naming the file."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from maskx.images import ImageError, read_image


def _png(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def test_reads_rgb_rgba_gray_and_16bit_as_rgb():
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out, notes = read_image(_png(rgb))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and np.array_equal(out, rgb) and notes == []
    rgba = np.zeros((20, 30, 4), np.uint8)  # fully transparent: white after compositing
    out, notes = read_image(_png(rgba))
    assert (out == 255).all() and any("white" in n for n in notes)
    out, notes = read_image(_png(rgb[..., 0]))
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 0], out[..., 2])
    deep = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    buf = io.BytesIO()
    deep.save(buf, format="PNG")
    out, notes = read_image(buf.getvalue())
    assert out.shape == (20, 30, 3) and out.max() == 255


def test_huge_image_is_downscaled_with_a_note():
    big = np.zeros((300, 2000, 3), np.uint8)
    out, notes = read_image(_png(big), max_side=500)
    assert out.shape == (75, 500, 3) and any("downscaled from 2000 x 300" in n for n in notes)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"), (b"not an image at all", "not an image"),
    (None, "truncated"),  # filled below: a PNG cut in half
])
def test_bad_uploads_are_clear_errors(data, match):
    if data is None:
        data = _png(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:300]
    with pytest.raises(ImageError, match=match) as e:
        read_image(data, name="cat.png")
    assert "cat.png" in str(e.value)
