"""The benchmark scripts (benchmarks/) run end to end and write the JSON they document (no timing
assertions): model_speed.py, threaded_kernels.py (outputs unchanged by the threaded kernels) and
data_rate.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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


def test_data_rate_writes_json_and_table(tmp_path):
    out = tmp_path / "res" / "data_rate.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_rate.py"), "--sizes", "64", "--images",
                           "3", "--load-passes", "1", "--train-steps", "3", "--out", str(out)],
                          check=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    res = json.loads(out.read_text())
    assert res["benchmark"] == "data_rate" and res["command"].endswith(f"--out {out}")
    [row] = res["results"]
    assert row["image_size"] == 64 and row["images"] == 3
    for key in ("generate_images_per_s_1_worker", "generate_images_per_s_2_workers", "load_images_per_s",
                "load_images_per_s_default_threads", "generate_images_per_cpu_s_1_worker", "load_images_per_cpu_s"):
        assert row[key] > 0, key
    # training timed through the real loop: 3 steps, the first 2 are warm-up
    assert row["train_steps_timed"] == 1 and row["train_images_per_s"] > 0 and row["train_batch"] == 2
    # the ratio of the unrounded rates: equal to the rounded ones' within their rounding
    assert row["load_over_train"] == pytest.approx(row["load_images_per_s"] / row["train_images_per_s"], rel=1e-2)
    assert "| load / train |" in proc.stdout
    assert "| 64 | 3 |" in proc.stdout
    assert [p.name for p in out.parent.iterdir()] == ["data_rate.json"]  # atomic write, no temp files
