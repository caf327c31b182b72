"""benchmarks/model_speed.py runs end to end and writes the JSON it documents (no timing assertions),
and the K-independent mask weights it measures match the full-matrix path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from maskx.models.mask_heads import MaskWeights
from maskx.models.transfer import WeightTransfer, detection_weights

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["cls", "box", "cls+box"])
def test_detection_weights_of_some_classes_are_rows_of_all(kind):
    torch.manual_seed(0)
    bp = FastRCNNPredictor(16, 11)
    classes = torch.tensor([0, 3, 10])
    assert torch.equal(detection_weights(bp, kind, classes), detection_weights(bp, kind)[classes])


def test_mask_weights_need_only_the_batch_classes():
    torch.manual_seed(0)
    bp = FastRCNNPredictor(16, 11)
    mw = MaskWeights("transfer", 11, 8, "cls+box", WeightTransfer(5 * 16, 8, 2, 8))
    labels = torch.tensor([4, 1, 4, 9])
    w, b = mw(labels, bp)
    w_all, _ = mw.all_classes(bp)
    assert b is None and torch.allclose(w, w_all[labels], atol=1e-6)


@pytest.mark.slow
def test_model_speed_quick_writes_expected_json(tmp_path):
    out = tmp_path / "model_speed.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "model_speed.py"), "--quick", "--out", str(out)],
                   check=True, cwd=REPO, timeout=3600)
    res = json.loads(out.read_text())
    assert {"meta", "train", "train_dense", "inference", "mask_predictor", "matmul_peak", "targets"} <= set(res)
    assert res["matmul_peak"]["best_gflops"] > 0
    for section, names in (("train", {"stock", "maskx_mlp_cap64", "maskx_mlp_nocap", "maskx_cap64", "maskx_nocap",
                                      "maskx_mlp_nocap_tvroi", "maskx_mlp_cap64_tvroi", "maskx_mlp_cap64_sparsefwd"}),
                           ("train_dense", {"stock", "maskx_mlp_cap64", "maskx_mlp_nocap", "maskx_mlp_nocap_tvroi",
                                            "maskx_mlp_cap64_sparsefwd"})):
        assert res[section]["same_detector_losses"] is True
        assert set(res[section]["variants"]) == names
        for row in res[section]["variants"].values():
            assert {"median_s", "min_s", "times_s", "ratio_vs_stock", "mask_rois_per_step", "gflop_per_step",
                    "gflop_vs_stock", "achieved_gflops", "fraction_of_matmul_peak"} <= set(row)
            assert row["gflop_per_step"] > 0
    assert set(res["inference"]) == {"stock", "maskx_mlp", "maskx", "maskx_mlp_sparsefwd"}
    for row in res["inference"].values():
        assert row["detections"] == 100 and {"median_s", "ratio_vs_stock", "gflop_per_image"} <= set(row)
    for mode in ("inference", "training"):
        rows = res["mask_predictor"][mode]
        assert set(rows) == {f"{m}_K{k}" for m in ("stock", "ours", "ours_uniform") for k in (81, 1001, 3001)}
        for row in rows.values():
            assert {"median_s", "peak_mb", "logits_mb_analytic", "ratio_vs_K81", "distinct_labels"} <= set(row)
        # stock and ours see one label pattern at every K; uniform labels have more distinct classes at larger K
        assert len({rows[f"ours_K{k}"]["distinct_labels"] for k in (81, 1001, 3001)}) == 1
        assert rows["ours_uniform_K3001"]["distinct_labels"] > rows["ours_K3001"]["distinct_labels"]
    assert {"train_maskx_mlp_nocap_met", "inference_maskx_mlp_met", "predictor_inference_ours_K3001_over_K81_met",
            "predictor_training_ours_K3001_over_K81_met"} <= set(res["targets"])
    profile = (out.parent / "profile_train_step.txt").read_text()
    assert "Self CPU" in profile and "maskx_mlp" in profile


def test_threaded_kernels_benchmark_finds_outputs_unchanged(tmp_path):
    """benchmarks/threaded_kernels.py on the shipped model: serial and threaded kernels give equal losses,
    proposals and detections (what the speed-up claims), and the JSON has what README quotes."""
    out = tmp_path / "threaded_kernels.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "threaded_kernels.py"), "--reps", "1", "--images", "1",
                    "--predict-reps", "1", "--out", str(out)], check=True, cwd=REPO, timeout=900)
    res = json.loads(out.read_text())
    t, p = res["train_step"], res["predict_256px"]
    assert t["same_losses"] is True and t["same_proposals"] is True and p["same_detections"] is True
    assert t["losses"]["loss_mask"] > 0  # set-A masks reached the mask loss
    for r in (t["step"], t["filter_proposals"], p):
        assert r["torchvision"]["median_s"] > 0 and r["threaded"]["ratio_vs_torchvision"] > 0
