"""Class-embedding projections for the app (maskx_app/projection.py): UMAP, cached, and degenerate inputs."""
from __future__ import annotations

import numpy as np
import pytest

from maskx_app.projection import umap_2d


@pytest.mark.slow  # umap-learn compiles with numba on first use (~30 s)
def test_umap_is_cached_and_handles_degenerate_inputs(tmp_path):
    m = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    a = umap_2d(m, tmp_path)
    assert a.shape == (40, 2) and len(list(tmp_path.glob("umap-*.npy"))) == 1
    assert np.array_equal(umap_2d(m, tmp_path), a)  # from the cache
    same = umap_2d(np.ones((10, 4), np.float32))  # a class-agnostic w_seg: every row equal
    assert same.shape == (10, 2) and not same.any()
