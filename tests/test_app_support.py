"""What the app relies on in maskx: safe image reading, class-embedding projections, dataset opening."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from maskx_app.browse import open_dataset
from maskx.data.coco import DatasetError
from maskx.images import ImageError, read_image
from maskx_app.projection import umap_2d
from maskx_app.visualize import GREEN, RED, Drawn, overlay


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


@pytest.mark.slow  # umap-learn compiles with numba on first use (~30 s)
def test_umap_is_cached_and_handles_degenerate_inputs(tmp_path):
    m = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    a = umap_2d(m, tmp_path)
    assert a.shape == (40, 2) and len(list(tmp_path.glob("umap-*.npy"))) == 1
    assert np.array_equal(umap_2d(m, tmp_path), a)  # from the cache
    same = umap_2d(np.ones((10, 4), np.float32))  # a class-agnostic w_seg: every row equal
    assert same.shape == (10, 2) and not same.any()


def test_open_dataset_knows_coco_and_vg_and_refuses_other_folders(tiny_synth, tmp_path):
    ds, kind = open_dataset(tiny_synth)
    assert kind == "coco" and len(ds) == 24
    ds, kind = open_dataset(tiny_synth / "annotations.json")
    assert kind == "coco"
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such"):
        open_dataset(tmp_path / "missing")


def test_overlay_colours_set_a_green_and_set_b_red():
    img = np.zeros((40, 40, 3), np.uint8)
    ma, mb = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    ma[5:15, 5:15] = True
    mb[25:35, 25:35] = True
    out = overlay(img, [Drawn([5, 5, 15, 15], ma, "a", 0.9, True), Drawn([25, 25, 35, 35], mb, "b", 0.8, False)],
                  labels=False)
    ga, rb = out[10, 10].astype(int), out[30, 30].astype(int)
    assert ga[1] > ga[0] and ga[1] > ga[2] and np.argmax(GREEN) == 1
    assert rb[0] > rb[1] and rb[0] > rb[2] and np.argmax(RED) == 0
