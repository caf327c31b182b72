"""Study results (maskx_study/results.py): the hours done and left (each RoI cache counted once), and the
wall-clock hours of a study from its result records (no training)."""
from __future__ import annotations

import pytest

from maskx_study.results import STUDY_BUDGET_HOURS
from maskx_study.runner import Run


def test_estimate_counts_each_roi_cache_once_and_the_caches_left():
    from maskx_study.runner import estimate_hours

    det = [Run("detector", "all", s, "resnet18") for s in (0, 1)]
    mask = [Run(p, "voc2nonvoc", s, "resnet18") for s in (0, 1) for p in ("agnostic", "oracle")]
    cache = {"detector_sha256": "x", "build_seconds": 3600.0}
    results = {det[0].key: {"train_seconds": 7200, "eval_seconds": 0},
               mask[0].key: {"train_seconds": 1800, "eval_seconds": 0, "roi_cache": cache},
               mask[1].key: {"train_seconds": 1800, "eval_seconds": 0, "roi_cache": cache}}
    est = estimate_hours(det + mask, results)
    assert est["hours_done"] == 4.0  # 2 h detector, 2 x 0.5 h stage-wise, the shared cache's 1 h once
    # left: one detector (2 h), two stage-wise runs (0.5 h each) and seed 1's cache (1 h)
    assert est["hours_left_estimate"] == 4.0 and est["roi_caches_left"] == 1
    assert est["runs_left_without_estimate"] == 0


def test_wall_hours_halves_one_thread_runs_and_takes_each_kinds_lower_quartile():
    from maskx_study.results import wall_hours

    def rec(split, stage, threads, seconds):
        return {"split": split, "stage": stage, "backbone": "b", "torch_threads": threads,
                "train_seconds": seconds, "eval_seconds": 0}

    results = {f"m{i}": rec("voc2nonvoc", "mask", 1, s) for i, s in enumerate((3600, 3600, 3600, 36000))}
    results["det"] = rec("all", "detector", 2, 7200)
    results.update({f"r{t}": rec(f"rand20_t{t}", "mask", 1, 1800 * (t + 1)) for t in range(2)})
    w = wall_hours(results)
    # measured: (3 + 10) / 2 mask-hours + 2 detector-hours + (0.5 + 1) / 2 rand20-hours
    assert w["measured"] == pytest.approx(6.5 + 2 + 0.75)
    # quiet: 4 mask runs at their lower quartile (1 h) / 2 + the detector + 2 rand20 runs at 0.5 h / 2
    assert w["quiet_estimate"] == pytest.approx(2 + 2 + 0.5) and w["budget"] == STUDY_BUDGET_HOURS == 10.0
    # a detector restored bit for bit (the same training, timed again): the lower time in the quiet estimate
    results["det"]["restores"] = [{"train_seconds": 5400, "at": "x"}, {"train_seconds": 9000, "at": "y"}]
    w = wall_hours(results)
    assert w["measured"] == pytest.approx(6.5 + 2 + 0.75)
    assert w["quiet_estimate"] == pytest.approx(2 + 1.5 + 0.5)
    # a RoI cache (one per detector, however many runs used it) is built by one 1-thread worker
    results["m0"]["roi_cache"] = results["m1"]["roi_cache"] = {"detector_sha256": "d", "build_seconds": 3600}
    w = wall_hours(results)
    assert w["measured"] == pytest.approx(6.5 + 2 + 0.75 + 0.5)
    assert w["quiet_estimate"] == pytest.approx(2 + 1.5 + 0.5 + 0.5)


def test_wall_hours_projects_the_runs_left_at_their_kinds_lower_quartile():
    from maskx_study.results import wall_hours

    det0, agn0 = Run("detector", "all", 0, "b"), Run("agnostic", "voc2nonvoc", 0, "b")
    agn1, ora0, e2e0 = Run("agnostic", "voc2nonvoc", 1, "b"), Run("oracle", "all", 0, "b"), Run("agnostic_e2e", "voc2nonvoc", 0, "b")
    results = {det0.key: {"split": "all", "stage": "detector", "backbone": "b", "seed": 0, "torch_threads": 2,
                          "train_seconds": 7200, "eval_seconds": 0},
               agn0.key: {"split": "voc2nonvoc", "stage": "mask", "backbone": "b", "seed": 0, "torch_threads": 1,
                          "train_seconds": 3000, "eval_seconds": 600,
                          "roi_cache": {"detector_sha256": "d0", "build_seconds": 3600}}}
    w = wall_hours(results, [det0, agn0, agn1, ora0, e2e0])
    assert w["quiet_estimate"] == pytest.approx(2 + 0.5 + 0.5)
    # agn1 at agn0's 0.5 h, plus seed 1's RoI cache (0.5 h as a 1-thread build); the oracle (stage-wise on
    # split "all") and the end-to-end run are kinds not measured yet
    assert w["left"] == pytest.approx(1.0) and w["left_unmeasured"] == 2
    # where the time goes, per measured kind: runs done and left, minutes per run, hours in all
    assert w["by_kind"] == [{"kind": "detector all b", "done": 1, "left": 0, "minutes": 120.0, "hours": 2.0},
                            {"kind": "mask voc2nonvoc b", "done": 1, "left": 1, "minutes": 30.0, "hours": 1.0},
                            {"kind": "RoI cache (one per detector, 1 thread)", "done": 1, "left": 1, "minutes": 30.0,
                             "hours": 1.0}]
    # the rows add up to the projection (hours from unrounded seconds, not from the rounded minutes)
    results[agn0.key]["train_seconds"] = 3001
    w = wall_hours(results, [det0, agn0, agn1, ora0, e2e0])
    assert sum(k["hours"] for k in w["by_kind"]) == pytest.approx(w["quiet_estimate"] + w["left"], abs=0.005)
    assert "left" not in wall_hours(results)
