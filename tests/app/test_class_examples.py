"""Example instances of a chosen class, drawn by its own world's code (the app's Embeddings page)."""
from __future__ import annotations

import numpy as np
import pytest

from maskx.data.synthetic3k import VERSIONS, categories3k
from maskx_app.class_examples import box_of, render_examples, world_of


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_each_3000_class_world_is_recognised_and_draws_the_class_asked_for(version):
    names = [c["name"] for c in sorted(categories3k(version), key=lambda c: c["id"])]
    world = world_of(names)
    assert world == f"3k-v{version}"
    rgb, masks = render_examples(world, names[1234])
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8 and 1 <= len(masks) <= 2
    assert all(m.any() and box_of(m)[2] > box_of(m)[0] for m in masks)
    again, same = render_examples(world, names[1234])
    assert np.array_equal(rgb, again) and all(np.array_equal(a, b) for a, b in zip(masks, same))


def test_other_class_lists_have_no_world():
    names = [c["name"] for c in sorted(categories3k(2), key=lambda c: c["id"])]
    assert world_of(names[:-1]) is None and world_of(names[::-1]) is None
    with pytest.raises(ValueError, match="no renderer"):
        render_examples("80", names[0])
