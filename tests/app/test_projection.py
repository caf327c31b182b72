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


def test_nearest_a_is_cosine_of_centred_rows_without_the_class_itself():
    from maskx_app.projection import nearest_a

    # a shared offset (the last column) would make every pair alike without centring
    m = np.array([[1, 0, 0, 5], [0, 1, 0, 5], [0, 0, 1, 5], [0.9, 0.1, 0, 5], [0, 0.2, 0.8, 5]], np.float64)
    in_a = np.array([True, True, True, False, False])
    idx, sim = nearest_a(m, in_a, k=2)
    c = m - m.mean(0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    for i in range(5):  # brute force: A rows by falling cosine, the class itself left out
        cands = sorted((j for j in range(3) if j != i), key=lambda j: -(c[i] @ c[j]))[:2]
        assert idx[i].tolist() == cands and np.allclose(sim[i], [c[i] @ c[j] for j in cands], atol=1e-6)
    assert idx[3, 0] == 0 and idx[4, 0] == 2 and sim[3, 0] > 0.9  # each B row beside its A row
    assert np.all(np.diff(sim, axis=1) <= 0)
    idx, sim = nearest_a(m, in_a, k=4)  # more places than A classes: -1 and NaN
    assert idx[3].tolist()[-1] == -1 and np.isnan(sim[3, -1]) and idx[0].tolist()[-2:] == [-1, -1]
    same_idx, same_sim = nearest_a(np.ones((4, 3)), np.array([True, True, False, False]), k=2)
    assert np.all(same_sim[2:] == 0) and same_idx[2].tolist() == [0, 1]  # equal rows: nothing is nearer


def test_class_families_from_the_world_or_the_names():
    from maskx.data.vocab3k import categories3k
    from maskx_app.projection import class_families

    cats = sorted(categories3k(), key=lambda c: c["id"])
    fams, source = class_families([c["name"] for c in cats], [c["id"] for c in cats])
    assert "embedded world" in source and len(set(fams)) == 10
    assert fams[[c["name"] for c in cats].index("nicked stretched coarse gear")] == "gear"
    fams, source = class_families(["a star", "b star", "c gear", "d gear"], [7, 8, 9, 10])
    assert fams == ["star", "star", "gear", "gear"] and "last word" in source
    fams, source = class_families(["person", "bicycle", "traffic light", "fire hydrant"], [1, 2, 10, 11])
    assert fams is None and "no family structure" in source


def _projections(sha="s" * 64):
    from maskx_app.projection import classes_digest, compute_projections

    rng = np.random.default_rng(0)
    mats = {"w_cls": rng.normal(size=(30, 6)), "randn": rng.normal(size=(30, 9))}
    in_a = np.arange(30) < 10
    proj = compute_projections(mats, in_a, [f"f{i % 3}" for i in range(30)], "test",
                               project=lambda m: np.asarray(m, float)[:, :2])
    names = [f"c{i}" for i in range(30)]
    proj.meta.update(weights_sha256=sha, classes_sha256=classes_digest(names, range(1, 31), range(1, 11)))
    return proj, names


def test_projection_file_round_trip_is_deterministic_and_checked_against_the_model(tmp_path):
    from maskx_app.projection import load_projections, read_projections, save_projections

    proj, names = _projections()
    a, b = save_projections(tmp_path / "a.npz", proj), save_projections(tmp_path / "b.npz", proj)
    assert a.read_bytes() == b.read_bytes()  # same projections, same bytes
    back = load_projections(a)
    assert back.kinds == ["w_cls", "randn"] and back.families == proj.families
    for k in back.kinds:
        assert np.allclose(back.xy[k], proj.xy[k], atol=1e-2) and np.array_equal(back.nearest[k], proj.nearest[k])
        assert np.allclose(back.similarity[k], proj.similarity[k], atol=2e-3)
    ok, why = read_projections(a, "s" * 64, names, range(1, 31), range(1, 11))
    assert ok is not None and why == ""
    assert "stale" in read_projections(a, "t" * 64, names, range(1, 31), range(1, 11))[1]  # other weights
    assert "stale" in read_projections(a, "s" * 64, names, range(1, 31), range(1, 12))[1]  # another set A
    assert "no precomputed" in read_projections(tmp_path / "none.npz", "s" * 64, names, range(1, 31), range(1, 11))[1]
    (tmp_path / "bad.npz").write_bytes(a.read_bytes()[:100])
    assert "unreadable" in read_projections(tmp_path / "bad.npz", "s" * 64, names, range(1, 31), range(1, 11))[1]


def test_the_shipped_models_projections_match_it():
    """models/maskx-3k/projections.npz is regenerated with the model (scripts/projections.py, maskx ship)."""
    import json

    from maskx.data.synthetic3k import categories3k
    from maskx.hub import shipped_dir
    from maskx_app.projection import INPUTS, PROJECTIONS_FILE, read_projections

    d = shipped_dir("maskx-3k")
    meta = json.loads(next(d.glob("ckpt_*.json")).read_text())
    proj, why = read_projections(d / PROJECTIONS_FILE, meta["sha256"], meta["class_names"], meta["category_ids"],
                                 meta["set_A"])
    assert proj is not None, why + ": run python scripts/projections.py"
    assert proj.kinds == list(INPUTS) and set(proj.families) == {c["supercategory"] for c in categories3k()}
    assert (d / PROJECTIONS_FILE).stat().st_size < 1024 * 1024


def test_family_shares_of_nearest_classes():
    from maskx_app.projection import Projections, chance_family_share, own_family_share

    in_a = np.array([True, True, False, False, False])
    fams = ["x", "y", "x", "y", "y"]
    proj = Projections({"k": np.zeros((5, 2))}, {"k": np.array([[1], [0], [0], [0], [1]])}, {"k": np.ones((5, 1))},
                       fams)
    assert own_family_share(proj, "k", in_a) == pytest.approx(2 / 3)  # rows 2 and 4 land in their family
    assert chance_family_share(proj, in_a) == pytest.approx(0.5)
    proj.families = None
    assert own_family_share(proj, "k", in_a) is None and chance_family_share(proj, in_a) is None
