"""The study's plan (maskx_study/plan.py): run order, the tables' runs and seeds, the second backbone and
the runs beyond the budget, each run's config at a scale, and ``maskx study plan``."""
from __future__ import annotations

import dataclasses
import json

from maskx_study.runner import DIRECTIONS, SCALES, TABLES, Run, plan


def test_plan_orders_detectors_first_and_has_no_duplicates():
    scale = SCALES["study"]
    runs = plan(scale)
    assert len(runs) == len(set(runs))
    assert [r.preset for r in runs[:3]] == ["detector", "agnostic", "oracle"]  # the data-design gate first
    for k, r in enumerate(runs):
        if r.preset != "detector":
            assert runs.index(r.detector()) < k
    # the oracle trains on every class: one run per seed serves both directions
    oracles = [r for r in runs if r.preset == "oracle" and r.backbone == scale.backbone]
    assert {r.split for r in oracles} == {"all"} and len(oracles) == len(scale.seeds)
    assert Run("oracle", "all", 0, "x").eval_splits == DIRECTIONS
    # Table 1a and Table 2 in both directions with every seed; Table 2 on two backbones
    t2 = [r for r in runs if r.preset == "transfer_clsbox_2lrelu_mlp_e2e"]
    assert len(t2) == 2 * (len(scale.seeds) + len(scale.second_backbone_seeds or scale.seeds))
    assert {r.backbone for r in t2} == {scale.backbone, scale.second_backbone}
    fig3 = [r for r in runs if r.split.startswith("rand")]
    assert len(fig3) == 2 * len(scale.fig3_sizes) * scale.fig3_trials
    assert plan(scale, ["t1b"], seeds=[0])[0] == Run("detector", "all", 0, scale.backbone)


def test_second_backbone_seeds_restrict_table_2_on_that_backbone_only():
    from maskx_study.runner import table_runs

    scale = dataclasses.replace(SCALES["study"], second_backbone_seeds=(0,))
    runs = table_runs("t2", scale)
    assert {r.seed for r in runs if r.backbone == scale.backbone} == {0, 1, 2}
    assert {r.seed for r in runs if r.backbone == scale.second_backbone} == {0}
    full = table_runs("t2", dataclasses.replace(scale, second_backbone_seeds=None))
    assert {r.seed for r in full if r.backbone == scale.second_backbone} == {0, 1, 2} and len(set(full)) == len(set(runs)) + 12


def test_the_plan_has_the_second_backbone_on_seed_0_and_beyond_budget_adds_its_other_seeds_only():
    from maskx_study.runner import beyond_budget

    scale = SCALES["study"]
    runs, every = plan(scale), plan(beyond_budget(scale))
    assert {r.seed for r in runs if r.backbone == scale.second_backbone} == {scale.seeds[0]}
    extra = [r for r in every if r not in set(runs)]
    # per seed: its detector, Table 2's 6 end-to-end runs and the 6 stage-wise runs they start from
    assert set(runs) < set(every) and len(extra) == 26
    assert {r.backbone for r in extra} == {scale.second_backbone} and {r.seed for r in extra} == {1, 2}
    t2 = {p for _, p in TABLES["t2"].rows}
    assert {r.preset for r in extra} == {"detector"} | t2 | {p.replace("_e2e", "") for p in t2}
    assert beyond_budget(scale).to_json() == {**scale.to_json(), "second_backbone_seeds": None}


def test_cli_beyond_budget_plans_the_second_backbones_other_seeds(tmp_path, capsys):
    from maskx.__main__ import main

    base = ["study", "plan", "--tables", "t2", "--backbones", "second", "--results", str(tmp_path), "--runs", str(tmp_path)]
    second = SCALES["study"].second_backbone
    assert main(base) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 13 and all("__s0" in r for r in out["plan"])  # detector, 6 stage-wise starts, 6 e2e
    assert main([*base, "--beyond-budget"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 39 and f"todo {second}__detector__all__s2" in out["plan"]


def test_run_configs_follow_the_scale():
    scale = SCALES["study"]
    det = Run("detector", "all", 1, scale.backbone).config(scale)
    sw = Run("transfer_glove_2lrelu", "nonvoc2voc", 1, "resnet18").config(scale, "runs/x")
    e2e = Run("agnostic_e2e", "voc2nonvoc", 1, "resnet18").config(scale, "runs/x")
    assert (det.stage, det.iters, det.detector) == ("detector", scale.detector_iters, None)
    assert (sw.stage, sw.iters, sw.detector, sw.split, sw.seed) == ("mask", scale.mask_iters, "runs/x", "nonvoc2voc", 1)
    assert (e2e.stage, e2e.iters, e2e.detector) == ("e2e", scale.e2e_iters, "runs/x")
    assert sw.rois_per_image == 128 and sw.mask_dim == 128


def test_the_second_backbone_detector_has_its_own_iterations_and_nothing_else_does():
    scale = dataclasses.replace(SCALES["study"], second_backbone_detector_iters=7)
    main, second = scale.backbone, scale.second_backbone
    assert Run("detector", "all", 0, second).config(scale).iters == 7
    assert Run("detector", "all", 0, main).config(scale).iters == scale.detector_iters
    assert Run("agnostic_e2e", "voc2nonvoc", 0, second).config(scale, "runs/x").iters == scale.e2e_iters
    unset = dataclasses.replace(scale, second_backbone_detector_iters=None)
    assert Run("detector", "all", 0, second).config(unset).iters == scale.detector_iters
    # one backbone in both roles (the tiny scale): the main backbone's count
    same = dataclasses.replace(scale, second_backbone=main)
    assert Run("detector", "all", 0, main).config(same).iters == scale.detector_iters


def test_cli_plan_restricted_to_the_main_backbone(tmp_path, capsys):
    from maskx.__main__ import main

    base = ["study", "plan", "--tables", "t2", "--seeds", "0", "--results", str(tmp_path), "--runs", str(tmp_path)]
    assert main([*base, "--backbones", "main"]) == 0
    out = capsys.readouterr().out
    main_bb, second = SCALES["study"].backbone, SCALES["study"].second_backbone
    assert f"{main_bb}__transfer_clsbox_2lrelu_mlp_e2e__voc2nonvoc__s0" in out and f"{second}__" not in out
    assert main(base) == 0
    assert f"{second}__detector__all__s0" in capsys.readouterr().out
    assert main([*base, "--backbones", "vgg16"]) == 2
    assert "--backbones: unknown ['vgg16']" in capsys.readouterr().err


def test_end_to_end_runs_start_from_their_stage_wise_run_when_the_scale_says_so():
    scale = SCALES["study"]
    assert scale.e2e_from_stagewise
    mx = Run("transfer_clsbox_2lrelu_mlp_e2e", "voc2nonvoc", 1, scale.backbone)
    assert mx.init(scale) == Run("transfer_clsbox_2lrelu_mlp", "voc2nonvoc", 1, scale.backbone)
    assert Run("transfer_clsbox_2lrelu_e2e_nostopgrad", "nonvoc2voc", 0, "r").init(scale).preset == "transfer_clsbox_2lrelu"
    assert Run("oracle_e2e", "all", 0, "r").init(scale) == Run("oracle", "all", 0, "r")
    assert Run("agnostic", "voc2nonvoc", 0, "r").init(scale) is None  # stage-wise runs start from the detector
    off = dataclasses.replace(scale, e2e_from_stagewise=False)
    assert mx.init(off) is None  # off: from the detector alone
    cfg = mx.config(scale, "runs/det", "runs/sw")
    assert (cfg.detector, cfg.mask_init, cfg.iters) == ("runs/det", "runs/sw", scale.e2e_iters)
    assert mx.config(off, "runs/det").mask_init is None
    runs = plan(scale, tables=["t2"])
    for r in runs:
        if r.init(scale) is not None:
            assert runs.index(r.init(scale)) < runs.index(r) and runs.index(r.detector()) < runs.index(r.init(scale))
    assert len(runs) == len(set(runs))
