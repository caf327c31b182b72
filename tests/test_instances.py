"""maskx.instances: saved predictions round-trip exactly, belong to one set of weights, and a
malformed file is refused with a message naming it (no torch needed to read them)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from maskx.instances import Instance, SavedPredictionsError, image_key, read_saved, write_saved


def _instances(rng, h=40, w=50, n=3):
    out = []
    for k in range(n):
        mask = np.zeros((h, w), bool)
        mask[5 + k:20 + k, 3 * k:25] = True
        out.append(Instance([3.0 * k, 5.0 + k, 25.0, 20.5 + k], float(rng.uniform(0, 1)), k + 1, 10 + k,
                            f"class {k}", k % 2 == 0, mask))
    return out


def test_round_trip_by_image_key_and_weights(tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(2))
    ia, ib = _instances(rng), _instances(rng, n=0)
    path = write_saved(tmp_path / "examples.json", "abc", [(1, a, ia), (2, b, ib)], {"why": "test"})
    data = json.loads(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["examples.json"]  # atomic: no temp file left
    saved = read_saved(data, str(path), "abc")
    assert set(saved) == {image_key(a), image_key(b)} and saved[image_key(b)] == []
    for got, want in zip(saved[image_key(a)], ia):
        assert got.class_name == want.class_name and got.in_A == want.in_A and got.label == want.label
        assert got.category_id == want.category_id and got.box == want.box
        assert abs(got.score - want.score) < 1e-5 and np.array_equal(got.mask, want.mask)
    assert read_saved(data, str(path), "other weights") == {}  # never shown as another model's masks
    assert read_saved(data, str(path)).keys() == saved.keys()


def test_image_key_tells_shapes_apart():
    flat = np.zeros((4, 6, 3), np.uint8)
    assert image_key(flat) != image_key(flat.reshape(6, 4, 3)) and image_key(flat) == image_key(flat.copy())


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d.pop("format"), "not a saved-predictions file"),
    (lambda d: d.update(images="none"), "not a saved-predictions file"),
    (lambda d: d["images"][0]["instances"][0].pop("class_name"), r"images\[0\] is malformed"),
    (lambda d: d["images"][0]["instances"][0]["segmentation"].update(size=[9, 9]), "mask size"),
    (lambda d: d["images"][0]["instances"][0].update(score="high"), r"images\[0\] is malformed"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path, break_it, message):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    path = write_saved(tmp_path / "examples.json", "abc", [(1, image, _instances(rng))], {})
    data = json.loads(path.read_text())
    break_it(data)
    with pytest.raises(SavedPredictionsError, match=message) as err:
        read_saved(data, str(path), "abc")
    assert str(path) in str(err.value) and "--examples-only" in str(err.value)


def test_reading_saved_predictions_does_not_import_torch():
    code = ("import sys, numpy as np; from maskx.instances import read_saved, write_saved, image_key; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
