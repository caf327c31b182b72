"""maskx.diagnostics: the similarity index, the linear transfer probe and T's spread behave as their
contracts say on embeddings whose answer is known (planted attributes, a planted linear map)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from maskx import diagnostics as dg
from maskx.config import Config
from maskx.models.maskx_rcnn import build_model


def _attributes(k=60, m=12, per_class=3, seed=0):
    """k classes, each with exactly ``per_class`` of ``m`` attributes (so attribute rows have equal norms)."""
    rng = np.random.default_rng(seed)
    attrs = np.zeros((k, m), bool)
    for i in range(k):
        attrs[i, rng.choice(m, per_class, replace=False)] = True
    return attrs


def test_the_index_is_one_for_embeddings_built_from_the_attributes():
    attrs = _attributes()
    in_b = np.arange(len(attrs)) >= 20
    out = dg.similarity_index(attrs.astype(float), attrs, in_b)
    assert out["rho"] == pytest.approx(1.0)
    assert out["nearest_a_shares"] == 1.0 and out["chance_shares"] < 1.0
    assert out["pairs"] == 60 * 59 // 2


def test_the_index_is_near_zero_for_random_embeddings_and_scrambled_attributes():
    attrs = _attributes()
    in_b = np.arange(len(attrs)) >= 20
    rng = np.random.default_rng(1)
    out = dg.similarity_index(rng.normal(size=(60, 512)), attrs, in_b)
    assert abs(out["rho"]) < 0.1
    shuffled = dg.similarity_index(attrs[rng.permutation(60)].astype(float), attrs, in_b)
    assert abs(shuffled["rho"]) < 0.2


def test_attribute_matrix_and_bad_shapes():
    m, names = dg.attribute_matrix([["striped", "round"], ["round"], []])
    assert names == ["round", "striped"]
    assert m.tolist() == [[True, True], [True, False], [False, False]]
    with pytest.raises(ValueError, match="embedding rows"):
        dg.similarity_index(np.zeros((3, 2)), m[:2], np.array([False, True, True]))


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 4, 200).astype(float), rng.normal(size=200)
    assert dg.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(dg.spearman(np.ones(5), np.arange(5.0)))


def test_centering_removes_a_shared_row():
    attrs = _attributes()
    shared = np.full(attrs.shape[1], 50.0)  # a common row swamps the class rows' cosines
    emb = attrs.astype(float) + shared
    in_b = np.arange(len(attrs)) >= 20
    assert dg.similarity_index(emb, attrs, in_b, center=True)["rho"] > 0.9
    assert dg.cosine_matrix(emb).min() > 0.99


def _planted(k=80, latent=8, d=300, e=33, seed=3):
    """Detection weights in an 8-d subspace of 300-d, mask weights a linear function of them (+ a shared row)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(k, latent))
    w_det = z @ rng.normal(size=(latent, d))
    w_seg = z @ rng.normal(size=(latent, e)) + rng.normal(size=e) * 3
    return w_det, w_seg


def test_the_probe_recovers_a_planted_linear_map_on_set_b():
    w_det, w_seg = _planted()
    in_a = np.arange(80) < 20
    pred, fit = dg.linear_probe(w_det, w_seg, in_a)
    err_b = np.linalg.norm(pred[~in_a] - w_seg[~in_a]) / np.linalg.norm(w_seg[~in_a] - w_seg[~in_a].mean(0))
    assert err_b < 0.02 and fit.alpha <= 1e-2


def test_the_probe_from_random_embeddings_predicts_only_the_mean():
    w_det, w_seg = _planted()
    in_a = np.arange(80) < 20
    randn = np.random.default_rng(4).normal(size=w_det.shape)
    pred, fit = dg.linear_probe(randn, w_seg, in_a)
    centred = w_seg[~in_a] - w_seg[in_a].mean(0)
    err_b = np.linalg.norm(pred[~in_a] - w_seg[~in_a]) / np.linalg.norm(centred)
    assert err_b > 0.9  # no better than predicting A's mean row for every B class
    assert fit.alpha >= 1.0  # leave-one-out picks heavy shrinkage: nothing to learn


def test_calibration_restores_the_size_of_rows_ridge_shrank_and_keeps_their_direction():
    """Rows with no shared part (mean ~ 0): ridge with a strong alpha shrinks B's predictions toward A's
    mean; calibration gives them A's mean deviation norm back, pointing where ridge pointed."""
    w_det, w_seg = _planted()
    w_seg = w_seg - w_seg.mean(0)
    in_a = np.arange(80) < 20
    pred, _ = dg.linear_probe(w_det, w_seg, in_a, alphas=(1e4,))
    mean = w_seg[in_a].mean(0)
    cal = dg.calibrate_rows(pred, w_seg, in_a)
    target = np.linalg.norm(w_seg[in_a] - mean, axis=1).mean()
    assert np.linalg.norm(pred[~in_a] - mean, axis=1).max() < 0.2 * target  # shrunk
    assert np.allclose(np.linalg.norm(cal - mean, axis=1), target)
    cos = np.sum((cal - mean) * (pred - mean), 1) / (np.linalg.norm(cal - mean, axis=1) * np.linalg.norm(pred - mean, axis=1))
    assert np.allclose(cos, 1.0)
    # a row equal to A's mean stays the mean (no direction to restore)
    assert np.allclose(dg.calibrate_rows(np.tile(mean, (3, 1)), w_seg, in_a), mean)


def test_ridge_leave_one_out_error_matches_refitting():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 40)), rng.normal(size=(12, 3))
    fit = dg.fit_ridge(x, y, alphas=(0.5,))
    # refit each fold by the normal equations (rows scaled as the full fit scales them)
    errs = []
    scale = float(np.linalg.norm(x - x.mean(0), axis=1).mean())
    for i in range(12):
        keep = np.arange(12) != i
        xk, yk = x[keep] / scale, y[keep]
        xm, ym = xk.mean(0), yk.mean(0)
        w = np.linalg.solve((xk - xm).T @ (xk - xm) + 0.5 * np.eye(40), (xk - xm).T @ (yk - ym))
        errs.append(np.mean(((x[i] / scale - xm) @ w + ym - y[i]) ** 2))
    assert fit.loo_error == pytest.approx(np.mean(errs), rel=1e-9)
    with pytest.raises(ValueError, match="rows"):
        dg.fit_ridge(x[:2], y[:2])


def test_transfer_spread_and_gap_closed():
    same = np.tile(np.arange(1.0, 5.0), (10, 1))
    assert dg.transfer_spread(same)["spread"] == 0.0
    rng = np.random.default_rng(6)
    centred = rng.normal(size=(100, 4))
    spread = dg.transfer_spread(centred - centred.mean(0) + np.array([0.1, 0, 0, 0]))
    assert spread["mean_row_norm"] == pytest.approx(0.1) and spread["spread"] > 10
    assert dg.gap_closed(0.55, 0.5, 0.6) == pytest.approx(0.5)
    assert dg.gap_closed(0.45, 0.5, 0.6) == pytest.approx(-0.5)
    assert dg.gap_closed(0.5, 0.5, 0.5) is None


TINY = Config(mask_dim=16, box_head_dim=32, mlp_hidden=16, image_size=64, pretrained_backbone=False)


def test_mask_weight_rows_round_trip_through_an_oracle_model():
    names = [f"c{i}" for i in range(5)]
    oracle = build_model(TINY.replace(mask_head="oracle", split="all"), names)
    rows = dg.mask_weight_rows(oracle)
    assert rows.shape == (5, 17)
    new = np.random.default_rng(7).normal(size=rows.shape)
    probe = dg.with_mask_weights(oracle, new)
    assert np.allclose(dg.mask_weight_rows(probe), new, atol=1e-6)
    assert np.allclose(dg.mask_weight_rows(oracle), rows)  # the original is untouched
    with pytest.raises(ValueError, match="rows must be"):
        dg.with_mask_weights(oracle, new[:3])
    agnostic = build_model(TINY.replace(mask_head="agnostic"), names)
    shared = dg.mask_weight_rows(agnostic)
    assert shared.shape == (5, 17) and np.allclose(shared, shared[:1])
    with pytest.raises(ValueError, match="oracle"):
        dg.with_mask_weights(agnostic, shared)


def test_embedding_matrices_of_a_model():
    names = ["person", "dog", "traffic light"]
    model = build_model(TINY, names)
    cls = dg.class_embedding_matrix(model, names, "cls")
    both = dg.class_embedding_matrix(model, names, "cls+box")
    assert cls.shape == (3, 32) and both.shape == (3, 160)
    assert np.allclose(both[:, :32], cls)
    assert np.allclose(cls, model.roi_heads.box_predictor.cls_score.weight[1:].detach().double().numpy())
    randn = dg.class_embedding_matrix(model, names, "randn")
    assert randn.shape[0] == 3 and np.allclose(randn, dg.class_embedding_matrix(model, names, "randn"))
    with pytest.raises(ValueError, match="embedding kind"):
        dg.class_embedding_matrix(model, names, "w_seg")
    assert torch.get_default_dtype() == torch.float32


def test_diagnose_end_to_end_recovers_mask_weights_planted_on_the_class_weights(tiny_synth):
    """An oracle whose mask weights are a linear function of its w_cls: the probe from ``cls`` gives the
    oracle's own masks on B (gap closed 1), the probe from randn does not; the report has every field."""
    from maskx.data.coco import CocoDataset
    from maskx.data.splits import info_split_args, resolve_split

    val = CocoDataset.from_dir(tiny_synth)
    split = resolve_split("voc2nonvoc", val.data["categories"], **info_split_args(val.data.get("info")))
    cfg = TINY.replace(box_head_dim=12, image_size=128)  # 12-d w_cls, 20 A classes: the map is identifiable
    names = list(val.categories.names)
    torch.manual_seed(0)
    detector = build_model(cfg.replace(mask_head="agnostic"), names)
    oracle = build_model(cfg.replace(mask_head="oracle", split="all"), names)
    shared = {k: v for k, v in detector.state_dict().items() if "mask_predictor" not in k}
    oracle.load_state_dict(shared, strict=False)  # same backbone, box branch and mask FCN
    w_cls = dg.class_embedding_matrix(detector, names, "cls")
    planted = w_cls @ np.random.default_rng(8).normal(size=(12, 17)) * 30
    oracle = dg.with_mask_weights(oracle, planted)
    agnostic = detector
    out = dg.diagnose(detector, oracle, agnostic, val, split, images=6, kinds=("cls", "randn"))
    iou = out["iou_on_gt_boxes"]
    assert set(iou) == {"agnostic", "oracle", "oracle_mean_row"} and iou["oracle"]["B"] != iou["agnostic"]["B"]
    cls, randn = out["embeddings"]["cls"], out["embeddings"]["randn"]
    assert cls["probe"]["iou_B"] == pytest.approx(iou["oracle"]["B"], abs=0.02)
    assert cls["probe"]["gap_closed_B"] == pytest.approx(1.0, abs=0.2)
    assert cls["probe"]["class_part_closed_B"] == pytest.approx(1.0, abs=0.2)
    assert abs(randn["probe"]["iou_B"] - iou["oracle"]["B"]) > abs(cls["probe"]["iou_B"] - iou["oracle"]["B"])
    assert cls["probe_calibrated"]["iou_B"] == pytest.approx(iou["oracle"]["B"], abs=0.05)
    assert set(cls["similarity"]) >= {"rho", "nearest_a_shares", "chance_shares"}
    assert set(out["embeddings"]) == {"cls", "randn", "attributes"}  # the attributes' upper bound rides along
    assert out["embeddings"]["attributes"]["similarity"]["rho"] == pytest.approx(1.0)
    assert {a.split(":")[0] for a in out["attributes"]} == {"body", "pattern", "hue"}  # the world's own
    assert out["spread"]["oracle"]["spread"] > 0.5


@pytest.mark.slow
def test_the_diagnostics_script_trains_the_heads_and_writes_its_table(tmp_path):
    """scripts/diagnostics.py at the tiny scale: the four stage-wise heads train on the detector's cached
    RoIs, a design split drawn with its own seed is written and used, the record and table are written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from helpers import subprocess_env
    from maskx.data.embedded import ensure_dataset
    from maskx.train import run_training
    from maskx_study.plan import SCALES, Run

    root = Path(__file__).resolve().parents[1]
    ensure_dataset(tmp_path / "data", "tiny", progress=False)
    run_training(Run("detector", "all", 0, "resnet18").config(SCALES["tiny"]), tmp_path / "data" / "train",
                 tmp_path / "runs" / "det", progress=False)
    out = tmp_path / "out" / "d.json"
    r = subprocess.run([sys.executable, str(root / "scripts" / "diagnostics.py"), "--detector", tmp_path / "runs" / "det",
                        "--data", tmp_path / "data", "--scale", "tiny", "--images", "3", "--split", "rand20_t0",
                        "--split-seed", "4242", "--out", out], env=subprocess_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["split_seed"] == 4242 and set(record["iou_on_gt_boxes"]) == {
        "agnostic", "oracle", "agnostic_all", "transfer", "oracle_mean_row"}
    split_file = next((tmp_path / "runs").glob("*agnostic__rand20_t0*.split.json"))
    assert len(json.loads(split_file.read_text())["A"]) == 20
    assert "| cls+box |" in out.with_suffix(".md").read_text()
    # what the embedding notebook draws comes with a full run: class list, layouts, nearest A, per-class IoU
    assert len(record["class_list"]) == 80 and len(record["projection"]["cls+box"]) == 80
    assert len(record["nearest_A"]["cls+box"]) == 60 and record["per_class_iou_on_gt_boxes"]["oracle"]


def test_category_attributes_of_each_world():
    v3 = {"id": 1, "name": "five star", "supercategory": "star"}
    world3k = {"id": 2, "name": "nicked five star", "supercategory": "star", "base": "five star",
               "attributes": ["nicked"]}
    v4 = {"id": 3, "name": "red striped star", "supercategory": "star",
          "attributes": ["body:star", "pattern:striped", "hue:red"]}
    assert dg.category_attributes([v3, world3k, v4]) == [
        ["family:star"], ["mod:nicked", "base:five star", "family:star"], ["body:star", "pattern:striped", "hue:red"]]


def test_the_shared_row_reading_separates_the_fcn_from_the_weights(tiny_synth):
    """An oracle whose class rows are all equal: the shared-row model is the oracle itself, so the
    class-specific part is zero and no probe can close any of it (None: no gap)."""
    from maskx.data.coco import CocoDataset
    from maskx.data.splits import info_split_args, resolve_split

    val = CocoDataset.from_dir(tiny_synth)
    split = resolve_split("voc2nonvoc", val.data["categories"], **info_split_args(val.data.get("info")))
    names = list(val.categories.names)
    cfg = TINY.replace(image_size=128)
    torch.manual_seed(1)
    oracle = build_model(cfg.replace(mask_head="oracle", split="all"), names)
    rows = dg.mask_weight_rows(oracle)
    oracle = dg.with_mask_weights(oracle, np.broadcast_to(rows[0], rows.shape))
    out = dg.diagnose(oracle, oracle, oracle, val, split, images=4, kinds=("cls",))
    iou = out["iou_on_gt_boxes"]
    assert iou["oracle_mean_row"] == iou["oracle"]
    assert out["embeddings"]["cls"]["probe"]["class_part_closed_B"] is None


def test_the_script_reads_the_box_ap_of_a_study_detector_result(tmp_path):
    """--box-ap-from: the detector's study result gives the box AP (mean of per-class AP over all
    classes, AP on A and on B of the split) without a second evaluation."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("diag_script", Path(__file__).parents[1] / "scripts" / "diagnostics.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    per_class = {"a": {"bbox_AP": 10.0}, "b": {"bbox_AP": 30.0}, "c": {"bbox_AP": None}}
    rec = {"metrics": {"voc2nonvoc": {"A": {"bbox_AP": 12.0}, "B": {"bbox_AP": 20.0}, "per_class": per_class}}}
    (tmp_path / "det.json").write_text(json.dumps(rec))
    assert script.box_ap_of_result(tmp_path / "det.json", "voc2nonvoc") == {"all": 20.0, "A": 12.0, "B": 20.0}
