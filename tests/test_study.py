"""The study runner: plan order, resumable results, cached evaluation equal to the full model's."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
from pycocotools import mask as mask_utils
import torch

from maskx_study.detection_cache import CacheMismatch, DetectionCache
from maskx.checkpoint import find_checkpoint, model_state
from maskx.data.coco import CocoDataset
from maskx.data.splits import resolve_split
from maskx.engine import evaluate_model
from maskx.predictor import load
from maskx.train import cpu_signature
from maskx.data.synthetic import GENERATOR_VERSION
from maskx_study.runner import DIRECTIONS, SCALES, TABLES, Run, Study, plan


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    scale = dataclasses.replace(SCALES["tiny"], data=str(root / "data"))
    study = Study(scale, results_dir=root / "results", runs_dir=root / "runs", progress=False, log=lambda m: None)
    runs = plan(scale, ["gate"]) + [Run("agnostic_e2e", "voc2nonvoc", 0, scale.backbone)]
    written = study.run(runs)
    return study, runs, written


def test_plan_orders_detectors_first_and_has_no_duplicates():
    scale = SCALES["study"]
    runs = plan(scale)
    assert len(runs) == len(set(runs))
    assert [r.preset for r in runs[:3]] == ["detector", "agnostic", "oracle"]  # the data-design gate first
    for k, r in enumerate(runs):
        if r.preset != "detector":
            assert runs.index(r.detector()) < k
    # the oracle trains on every class: one run per seed serves both directions
    oracles = [r for r in runs if r.preset == "oracle"]
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
    assert {r.seed for r in full if r.backbone == scale.second_backbone} == {0, 1, 2} and len(set(full)) == len(set(runs)) + 10


def test_the_plan_has_the_second_backbone_on_seed_0_and_beyond_budget_adds_its_other_seeds_only():
    from maskx_study.runner import beyond_budget

    scale = SCALES["study"]
    runs, every = plan(scale), plan(beyond_budget(scale))
    assert {r.seed for r in runs if r.backbone == scale.second_backbone} == {scale.seeds[0]}
    extra = [r for r in every if r not in set(runs)]
    assert set(runs) < set(every) and len(extra) == 12
    assert {r.backbone for r in extra} == {scale.second_backbone} and {r.seed for r in extra} == {1, 2}
    assert {r.preset for r in extra} == {"detector"} | {p for _, p in TABLES["t2"].rows}
    assert beyond_budget(scale).to_json() == {**scale.to_json(), "second_backbone_seeds": None}


def test_cli_beyond_budget_plans_the_second_backbones_other_seeds(tmp_path, capsys):
    from maskx.__main__ import main

    base = ["study", "plan", "--tables", "t2", "--backbones", "second", "--results", str(tmp_path), "--runs", str(tmp_path)]
    second = SCALES["study"].second_backbone
    assert main(base) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 6 and all("__s0" in r for r in out["plan"])
    assert main([*base, "--beyond-budget"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 18 and f"todo {second}__detector__all__s2" in out["plan"]


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


def test_results_that_no_longer_match_the_plan_are_superseded_and_kept(tmp_path):
    """A scale change (here the mask branch's lr) or a generator bump makes old results stale: they
    move to results/superseded/ with the reason (their run folders too) and will be rerun; the
    detector, whose config did not change, stays."""
    from maskx_study.runner import load_results, load_superseded

    old = SCALES["tiny"]
    new = dataclasses.replace(old, mask_lr_mult=10.0)
    study = Study(new, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    det, agn, ora = Run("detector", "all", 0, "resnet18"), Run("agnostic", "voc2nonvoc", 0, "resnet18"), \
        Run("oracle", "all", 0, "resnet18")
    for run, scale, version in ((det, old, GENERATOR_VERSION), (agn, old, GENERATOR_VERSION),
                                (ora, new, GENERATOR_VERSION - 1)):
        config = run.config(scale, "elsewhere/det")
        if run is det:  # a detector trained under another split name is the same detector
            config = config.replace(split="voc2nonvoc")
        study.result_path(run).parent.mkdir(parents=True, exist_ok=True)
        study.result_path(run).write_text(json.dumps(
            {"run": run.key, "config": config.to_json(), "generator_version": version}))
        study.run_dir(run).mkdir(parents=True)
    assert Run("agnostic", "voc2nonvoc", 0, "resnet18").config(new, "x").mask_lr_mult == 10.0
    assert det.config(new).mask_lr_mult == 1.0  # detectors train no mask branch: unaffected
    moved = study.supersede_stale([det, agn, ora])
    assert len(moved) == 2 and set(load_results(tmp_path / "results")) == {det.key}
    reasons = {r["run"]: r["superseded"]["reason"] for r in load_superseded(tmp_path / "results")}
    assert "mask_lr_mult (1.0 → 10.0)" in reasons[agn.key]
    assert f"generator version {GENERATOR_VERSION - 1} → {GENERATOR_VERSION}" == reasons[ora.key]
    assert study.run_dir(det).is_dir() and not study.run_dir(agn).exists() and not study.run_dir(ora).exists()
    assert len(list((tmp_path / "runs" / "superseded").iterdir())) == 2
    assert study.supersede_stale([det, agn, ora]) == []


def test_new_inference_settings_re_evaluate_and_keep_the_trained_run(tmp_path):
    from maskx_study.runner import load_results

    old = SCALES["tiny"]
    new = dataclasses.replace(old, overrides=old.overrides + ("detections_per_img=50", "rpn_test_proposals=300"))
    agn = Run("agnostic", "voc2nonvoc", 0, "resnet18")
    study = Study(new, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    study.result_path(agn).parent.mkdir(parents=True)
    study.result_path(agn).write_text(json.dumps({"run": agn.key, "config": agn.config(old, "d").to_json(),
                                                  "generator_version": GENERATOR_VERSION}))
    study.run_dir(agn).mkdir(parents=True)
    moved = study.supersede_stale([agn])
    reason = json.loads(moved[0].read_text())["superseded"]["reason"]
    assert reason == "inference settings differ in detections_per_img (10 → 50), rpn_test_proposals (1000 → 300)"
    assert load_results(tmp_path / "results") == {} and study.run_dir(agn).is_dir()  # evaluated again, not retrained


def fake_detector_and_run(study, scale, det, run, weights: str, recorded: str):
    """A trained detector folder whose final checkpoint has sha256 ``weights``, its result and one
    result built on a detector with sha256 ``recorded`` (configs at ``scale``); returns the folder."""
    det_dir = study.run_dir(det)
    det_dir.mkdir(parents=True)
    (det_dir / "done.json").write_text("{}")
    (det_dir / "ckpt_0000004.json").write_text(json.dumps({"sha256": weights}))
    study.result_path(det).parent.mkdir(parents=True)
    for r, config, extra in ((det, det.config(scale), {}), (run, run.config(scale, det_dir), {"detector_sha256": recorded})):
        study.result_path(r).write_text(json.dumps(
            {"run": r.key, "config": config.to_json(), "generator_version": GENERATOR_VERSION, **extra}))
    return det_dir


def test_a_retrained_detector_supersedes_the_runs_built_on_it(tmp_path):
    """Changing only the detectors' recipe (``detector_overrides``) makes the detector stale, and
    with it every run that recorded the old detector's checkpoint; the mask runs' configs are unchanged."""
    from maskx_study.runner import load_results

    old = SCALES["tiny"]
    new = dataclasses.replace(old, detector_overrides=("base_lr=0.08",))
    det, agn = Run("detector", "all", 0, "resnet18"), Run("agnostic", "voc2nonvoc", 0, "resnet18")
    assert det.config(new).base_lr == 0.08 and agn.config(new, "d").base_lr == agn.config(old, "d").base_lr
    study = Study(new, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    det_dir = fake_detector_and_run(study, old, det, agn, weights="old detector", recorded="old detector")
    assert study.stale_reason(agn, json.loads(study.result_path(agn).read_text())) is None  # same detector
    moved = study.supersede_stale([det, agn])
    # the detector goes at once; the mask run stays until a new detector exists (nothing to compare yet)
    assert [p.name.split("__")[1] for p in moved] == ["detector"] and list(load_results(tmp_path / "results")) == [agn.key]
    assert "base_lr (0.02 → 0.08)" in json.loads(moved[0].read_text())["superseded"]["reason"]
    det_dir.mkdir(parents=True)  # the retrained detector
    (det_dir / "done.json").write_text("{}")
    (det_dir / "ckpt_0000004.json").write_text(json.dumps({"sha256": "new detector"}))
    moved = study.supersede_stale([det, agn])
    assert len(moved) == 1 and load_results(tmp_path / "results") == {}
    assert "detector was retrained" in json.loads(moved[0].read_text())["superseded"]["reason"]


@pytest.mark.slow  # trains 4 tiny runs (about a minute)
def test_results_record_both_directions_and_rerun_skips(tiny_study):
    study, runs, written = tiny_study
    assert len(written) == len(runs)
    oracle = json.loads(study.result_path(Run("oracle", "all", 0, study.scale.backbone)).read_text())
    assert set(oracle["metrics"]) == set(DIRECTIONS)
    for d in DIRECTIONS:
        m = oracle["metrics"][d]
        assert "segm_AP" in m["B"] and "bbox_AP" in m["A"] and len(m["per_class"]) == 80
    assert oracle["eval"] == "mask head on cached detections" and oracle["generator_version"] == GENERATOR_VERSION
    assert oracle["config"]["detector"] and oracle["train_seconds"] > 0
    assert oracle["config"]["mask_roi_cache"] == 4 and oracle["roi_cache"]["rois"] > 0  # stage 2 on cached RoIs
    e2e = json.loads(study.result_path(runs[-1]).read_text())
    assert e2e["eval"] == "full model" and e2e["stage"] == "e2e"
    for d in DIRECTIONS:  # mask quality with detection taken out, both sets
        iou = oracle["metrics"][d]["masks_on_gt_boxes"]
        assert 0 <= iou["B"]["mean_iou"] <= iou["B"]["ceiling"] <= 1 and iou["A"]["instances"] > 0
    assert "masks_on_gt_boxes" in e2e["metrics"][e2e["split"]]
    mtimes = [study.result_path(r).stat().st_mtime_ns for r in runs]
    assert study.run(runs) == []  # everything done: nothing retrained or rewritten
    assert mtimes == [study.result_path(r).stat().st_mtime_ns for r in runs]
    # a result from before the measure existed gets it by evaluation only (the checkpoint is kept)
    path, ckpts = study.result_path(runs[2]), sorted(study.run_dir(runs[2]).glob("ckpt_*"))  # the oracle: both directions
    old = json.loads(path.read_text())
    measured = {name: m.pop("masks_on_gt_boxes") for name, m in old["metrics"].items()}
    path.write_text(json.dumps(old))
    assert study.add_gt_box_ious(runs) == [path] and sorted(study.run_dir(runs[2]).glob("ckpt_*")) == ckpts
    # computed afresh, as during the run (there on the detector's GT-box features cached once)
    assert {name: m["masks_on_gt_boxes"] for name, m in json.loads(path.read_text())["metrics"].items()} == measured


@pytest.mark.slow  # retrains the tiny detector twice (seconds each)
def test_a_fresh_clone_restores_the_detector_bit_for_bit_or_supersedes(tiny_study, tmp_path):
    """results/ is committed, runs/ is not: in a fresh clone the first run that needs a detector
    retrains it with the recorded thread count; identical weights keep every result built on it,
    different ones supersede them."""
    import shutil

    from maskx_study.runner import load_results

    study, runs, _ = tiny_study
    shutil.copytree(study.results_dir, tmp_path / "results")
    logs = []
    clone = Study(study.scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", progress=False,
                  log=logs.append)
    det, new = runs[0], Run("agnostic_mlp", "voc2nonvoc", 0, study.scale.backbone)
    before = load_results(tmp_path / "results")
    assert before[det.key]["torch_threads"] == torch.get_num_threads() and before[det.key]["checkpoint_sha256"]
    assert before[det.key]["cpu"] == cpu_signature()  # bit-for-bit holds on one kind of CPU
    assert clone.run(runs) == []  # nothing pending: nothing retrained
    assert clone.run(runs + [new]) == [clone.result_path(det), clone.result_path(new)]
    assert any("restored bit for bit" in m for m in logs)
    after = load_results(tmp_path / "results")
    restores = after[det.key].pop("restores")  # the same training timed again (the report's idle estimate)
    assert len(restores) == 1 and restores[0]["train_seconds"] > 0
    assert {k: after[k] for k in before} == before  # every result stands, the detector's included
    assert after[new.key]["detector_sha256"] == before[det.key]["checkpoint_sha256"]

    # a detector that comes out different (here: results that recorded other weights) supersedes its
    # own result and every result built on it, and they are rerun
    for key, record in after.items():
        sha = "checkpoint_sha256" if key == det.key else "detector_sha256"
        clone.result_path(Run(*key.split("__")[1:3], 0, det.backbone)).write_text(json.dumps({**record, sha: "0" * 64}))
    clone.result_path(new).unlink()  # pending: it needs the detector
    shutil.rmtree(tmp_path / "runs")
    logs.clear()
    assert len(clone.run(runs + [new])) == len(runs) + 1
    assert any("WARNING" in m and "differs from the recorded one" in m for m in logs)
    reasons = [json.loads(p.read_text())["superseded"]["reason"] for p in (tmp_path / "results/superseded").glob("*")]
    assert sum("differs from the recorded one" in r for r in reasons) == 1
    assert sum(f"trained on {cpu_signature()}, retrained on {cpu_signature()}" in r for r in reasons) == 1
    assert sum("detector was retrained" in r for r in reasons) == len(runs) - 1  # the gate's mask runs, the e2e run
    assert {r["detector_sha256"] for k, r in load_results(tmp_path / "results").items() if k != det.key} == \
        {before[det.key]["checkpoint_sha256"]}


@pytest.mark.slow  # trains 4 tiny runs (about a minute)
def test_missing_detector_is_a_clear_error(tiny_study):
    study = tiny_study[0]
    with pytest.raises(RuntimeError, match="detector .* is not trained"):
        study.run_one(Run("agnostic", "voc2nonvoc", 5, study.scale.backbone))


@pytest.mark.slow  # trains 4 tiny runs (about a minute)
def test_e2e_run_starts_from_the_detector_and_trains_it(tiny_study):
    study, runs, _ = tiny_study
    _, det = find_checkpoint(study.run_dir(runs[0]))
    _, e2e = find_checkpoint(study.run_dir(runs[-1]))
    det, e2e = model_state(det), model_state(e2e)
    key = "roi_heads.box_predictor.cls_score.weight"
    # warm start: far closer to the detector than a fresh init would be, yet trained (changed)
    assert not torch.equal(det[key], e2e[key])
    assert (det[key] - e2e[key]).abs().max() < 0.1 * det[key].abs().max()


@pytest.mark.slow  # trains 4 tiny runs (about a minute)
def test_cached_evaluation_equals_the_full_model(tiny_study):
    study, runs, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    detector = load(study.run_dir(runs[0])).model
    predictor = load(study.run_dir(Run("agnostic", "voc2nonvoc", 0, study.scale.backbone)))
    for m in (detector, predictor.model):  # an untrained detector scores below the default threshold
        m.roi_heads.score_thresh = 0.0
    cache = DetectionCache(detector, val, progress=False)
    cached = cache.predict_masks(predictor)
    _, full = evaluate_model(predictor, val, split, progress=False)
    assert len(full) > 0
    assert cached == full
    with torch.no_grad():
        next(predictor.model.backbone.parameters()).add_(1.0)
    with pytest.raises(CacheMismatch, match="detector weights differ"):
        cache.predict_masks(predictor)


@pytest.mark.slow  # trains 4 tiny runs (about a minute; shared with the tests above)
def test_skipping_masks_of_absent_classes_keeps_ap_and_per_class_ap(tiny_study):
    """A detection of a class with no ground truth in its image is a false positive whatever its mask:
    evaluating without those masks gives the same segm AP, AP50, AP75 and per-class AP."""
    from maskx.evaluate import evaluate_predictions

    study, runs, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    detector = load(study.run_dir(runs[0])).model
    predictor = load(study.run_dir(Run("agnostic", "voc2nonvoc", 0, study.scale.backbone)))
    for m in (detector, predictor.model):
        m.roi_heads.score_thresh = 0.0
    present: dict = {}
    for a in val.data["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    cache = DetectionCache(detector, val, progress=False)
    full = cache.predict_masks(predictor)
    # an untrained detector names no class of its image: count half of its detected classes as present
    # too (a superset of the ground truth's classes keeps the result), so both branches run
    for p in full[::2]:
        present.setdefault(p["image_id"], set()).add(p["category_id"])
    skipped = cache.predict_masks(predictor, present=present)
    assert [(p["image_id"], p["category_id"], p["score"]) for p in full] == \
        [(p["image_id"], p["category_id"], p["score"]) for p in skipped]
    absent = [k for k, p in enumerate(full) if p["category_id"] not in present.get(p["image_id"], set())]
    assert 0 < len(absent) < len(full)  # both kinds occur, so the comparison means something
    for k, (f, s) in enumerate(zip(full, skipped)):
        if k in set(absent):
            assert mask_utils.area(s["segmentation"]) == 0
        else:
            assert s["segmentation"] == f["segmentation"]
    a, b = evaluate_predictions(val.data, full, split), evaluate_predictions(val.data, skipped, split)
    for s in ("A", "B"):
        for k in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP"):
            assert a[s][k] == b[s][k], (s, k)
    assert {n: v["segm_AP"] for n, v in a["per_class"].items()} == {n: v["segm_AP"] for n, v in b["per_class"].items()}


@pytest.mark.slow  # reuses the tiny study's runs: evaluation only
def test_the_full_model_skips_masks_of_absent_classes_and_keeps_ap(tiny_study):
    """End-to-end runs are evaluated with the full model: ``evaluate_model(present=)`` computes no mask for a
    detection of a class absent from its image and leaves AP, AP50, AP75 and per-class AP as they were."""
    from maskx.evaluate import evaluate_predictions

    study, _, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    predictor = load(study.run_dir(Run("agnostic_e2e", "voc2nonvoc", 0, study.scale.backbone)))
    predictor.model.roi_heads.score_thresh = 0.0
    _, full = evaluate_model(predictor, val, split, progress=False)
    present: dict = {}
    for a in val.data["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    for p in full[::2]:  # as above: a superset of the ground truth's classes, so both branches run
        present.setdefault(p["image_id"], set()).add(p["category_id"])
    _, skipped = evaluate_model(predictor, val, split, progress=False, present=present)
    assert [(p["image_id"], p["category_id"], p["bbox"]) for p in full] == \
        [(p["image_id"], p["category_id"], p["bbox"]) for p in skipped]
    absent = {k for k, p in enumerate(full) if p["category_id"] not in present.get(p["image_id"], set())}
    assert 0 < len(absent) < len(full)
    for k, (f, s) in enumerate(zip(full, skipped)):
        if k in absent:
            assert mask_utils.area(s["segmentation"]) == 0
        else:
            assert mask_utils.area(mask_utils.merge([s["segmentation"], f["segmentation"]], intersect=True)) >= \
                0.99 * mask_utils.area(f["segmentation"])  # same mask (another batch: float rounding)
    a, b = evaluate_predictions(val.data, full, split), evaluate_predictions(val.data, skipped, split)
    for s in ("A", "B"):
        for k in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP"):
            assert a[s][k] == pytest.approx(b[s][k], abs=1e-9), (s, k)
    assert predictor.model.roi_heads._mask_only_labels is None  # the filter ends with the image


@pytest.mark.slow  # reuses the tiny study's runs: evaluation only
def test_a_scale_that_skips_absent_class_masks_reports_no_area_stats(tiny_study, tmp_path):
    study, _, _ = tiny_study
    scale = dataclasses.replace(study.scale, eval_skip_absent_masks=True)
    other = Study(scale, results_dir=tmp_path / "results", runs_dir=study.runs_dir, progress=False, log=lambda m: None)
    run = Run("agnostic", "voc2nonvoc", 0, scale.backbone)
    det_dir = other.run_dir(run.detector())
    metrics, how, _, _ = other.evaluate_run(run, run.config(scale, det_dir), other.run_dir(run), det_dir)
    assert how == "mask head on cached detections of classes present in their image"
    for s in ("A", "B"):  # masks of unmatched detections were not computed: their area ranges are unknown
        assert all(metrics["voc2nonvoc"][s][f"segm_{k}"] is None for k in ("APs", "APm", "APl"))
        assert "segm_AP" in metrics["voc2nonvoc"][s] and "bbox_APs" in metrics["voc2nonvoc"][s]


def test_a_detector_whose_weights_here_differ_is_evaluated_again_and_its_runs_rerun(tmp_path):
    """A detector trained here whose checkpoint is not the one its result (or, for results from before
    detectors recorded it, the runs built on it) recorded: the detector is evaluated again (weights
    kept), the runs built on the other weights are rerun."""
    scale = SCALES["tiny"]
    det, agn = Run("detector", "all", 0, "resnet18"), Run("agnostic", "voc2nonvoc", 0, "resnet18")
    study = Study(scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    det_dir = fake_detector_and_run(study, scale, det, agn, weights="here", recorded="old")
    assert study.recorded_detector_sha256(det) == "old"  # from the runs built on it
    moved = study.supersede_stale([det, agn])
    reasons = [json.loads(p.read_text())["superseded"]["reason"] for p in moved]
    assert "weights here differ" in reasons[0] and "detector was retrained" in reasons[1]
    assert (det_dir / "done.json").is_file()  # kept: only evaluated again


def test_workers_leave_new_detectors_and_wide_restores_to_the_parent(tmp_path, monkeypatch):
    """A detector that trained with more threads than a ``--jobs`` worker has is not restored by a
    worker (it would oversubscribe the cores), and a new one is not trained by a 1-thread worker while
    the other waits for it: the parent trains both first, alone; narrow restores are left to the workers."""
    study = Study(SCALES["tiny"], results_dir=tmp_path / "r", runs_dir=tmp_path / "runs", log=lambda m: None)
    wide, narrow, new = (Run("detector", "all", s, "resnet18") for s in (0, 1, 2))
    runs = [wide, Run("agnostic", "voc2nonvoc", 0, "resnet18"), narrow, Run("agnostic", "voc2nonvoc", 1, "resnet18"),
            new, Run("agnostic", "voc2nonvoc", 2, "resnet18")]
    study.result_path(wide).parent.mkdir(parents=True)
    for det, threads in ((wide, torch.get_num_threads() + 1), (narrow, 1)):
        study.result_path(det).write_text(json.dumps({"run": det.key, "torch_threads": threads}))
    assert study._todo(runs) == runs  # each pending run preceded by its detector, to restore or train
    assert not study._can_restore(wide) and study._can_restore(narrow)
    trained = []
    monkeypatch.setattr("maskx.data.synthetic.ensure_dataset", lambda *a, **k: None)
    monkeypatch.setattr(Study, "run_one", lambda self, run: trained.append(run) or self.result_path(run))
    assert study.train_detectors_first(runs, threads=1) == [study.result_path(wide), study.result_path(new)]
    assert trained == [wide, new] and not study._locked(wide) and not study._locked(new)


def test_claims_are_exclusive_and_stale_locks_are_reclaimed(tmp_path):
    study = Study(SCALES["tiny"], results_dir=tmp_path / "r", runs_dir=tmp_path / "runs", log=lambda m: None)
    run = Run("agnostic", "voc2nonvoc", 0, "resnet18")
    assert study._claim(run) and study._locked(run)
    assert not study._claim(run)  # held by this (live) process
    study._release(run)
    assert not study._locked(run)
    study._lock_path(run).write_text("999999999")  # a pid that cannot exist: its process died
    assert not study._locked(run) and study._claim(run)
    study._release(run)


def test_a_worker_runs_something_else_while_another_builds_the_roi_cache(tmp_path, monkeypatch):
    """While one worker's stage-wise run builds its detector's RoI cache, another worker takes an
    end-to-end run rather than a stage-wise one that would wait for the cache; once the cache is
    built (or when nothing else is ready), stage-wise runs are taken in plan order again."""
    scale = dataclasses.replace(SCALES["tiny"], data=str(tmp_path / "data"))
    assert scale.mask_roi_cache > 0
    study = Study(scale, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs", progress=False, log=lambda m: None)
    det = Run("detector", "all", 0, "resnet18")
    sw1, sw2 = Run("agnostic", "voc2nonvoc", 0, "resnet18"), Run("oracle", "all", 0, "resnet18")
    e2e = Run("agnostic_e2e", "voc2nonvoc", 0, "resnet18")
    other = Run("agnostic", "voc2nonvoc", 1, "resnet18")  # another detector's: no cache of its own built
    det_dir = study.run_dir(det)
    det_dir.mkdir(parents=True)
    (det_dir / "done.json").write_text("{}")
    study.result_path(det).parent.mkdir(parents=True)
    study.result_path(det).write_text(json.dumps({"run": det.key}))
    todo = [sw1, sw2, e2e, other]
    assert study._roi_caches_being_built(todo) == set()  # nobody is building it
    study._lock_path(sw1).write_text(str(os.getppid()))  # another live process claimed sw1: it builds the cache
    study._lock_path(e2e).write_text(str(os.getppid()))  # an end-to-end run claimed builds no cache
    assert study._roi_caches_being_built(todo) == {det}  # not seed 1's detector
    study._lock_path(e2e).unlink()
    assert study._uses_roi_cache(sw2) and not study._uses_roi_cache(e2e) and not study._uses_roi_cache(det)
    monkeypatch.setattr("maskx.data.synthetic.ensure_dataset", lambda *a, **k: None)
    monkeypatch.setattr(Study, "supersede_stale", lambda self, runs: [])
    monkeypatch.setattr(Study, "add_gt_box_ious", lambda self, runs: [])
    taken = []
    monkeypatch.setattr(Study, "run_one", lambda self, run: taken.append(run) or self.result_path(run))
    study.run([det, sw1, sw2, e2e], max_runs=1, poll_seconds=0.01)
    assert taken == [e2e]
    (det_dir / "roi_cache").mkdir()
    (det_dir / "roi_cache" / "meta.json").write_text("{}")  # built: plan order again
    assert study._roi_caches_being_built(todo) == set()
    study.run([det, sw1, sw2, e2e], max_runs=1, poll_seconds=0.01)
    assert taken == [e2e, sw2]


def test_a_run_whose_detector_is_not_planned_does_not_hang(tmp_path):
    scale = dataclasses.replace(SCALES["tiny"], data=str(tmp_path / "data"))
    study = Study(scale, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs", progress=False, log=lambda m: None)
    assert study.run([Run("agnostic", "voc2nonvoc", 0, "resnet18")], poll_seconds=0.01) == []


@pytest.mark.slow
def test_two_worker_processes_share_a_plan(tmp_path):
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    cmd = [sys.executable, "-m", "maskx", "study", "run", "--scale", "tiny", "--tables", "gate", "--jobs", "2",
           "--quiet", "--data", str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "r").glob("*.json")) == sorted(f"{r.key}.json" for r in plan(SCALES["tiny"], ["gate"]))
    assert not list((tmp_path / "runs").glob("*.lock"))


def test_detector_probe_script_compares_loss_windows(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    runs = []
    for name, scale in (("a", 1.0), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"iter": i, "loss": scale * (2 - i / 500), "loss_classifier": 1.0, "loss_box_reg": 0.5,
                 "loss_objectness": 0.1} for i in range(500)]
        (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        runs.append(str(run))
    script = Path(__file__).resolve().parents[1] / "scripts" / "detector_probes.py"
    out = subprocess.run([sys.executable, str(script), "losses", *runs], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("0-249 | 1.751 ") and "| 0.875 " in lines[1]


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


def test_results_recorded_before_embedding_norm_are_stale_only_for_fixed_embeddings(tmp_path):
    """embedding_norm was added after the first Table 1a runs: a recorded config without it trained
    with raw rows (RECORDED_BEFORE), so randn/GloVe/text results are rerun; a cls+box or class-agnostic
    result, whose model never reads the field, is not."""
    scale = SCALES["tiny"]
    study = Study(scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    randn, clsbox = Run("transfer_randn_2lrelu", "voc2nonvoc", 0, "resnet18"), \
        Run("transfer_clsbox_2lrelu", "voc2nonvoc", 0, "resnet18")
    agn = Run("agnostic", "voc2nonvoc", 0, "resnet18")
    for run in (randn, clsbox, agn):
        config = run.config(scale, "d").to_json()
        del config["embedding_norm"]
        record = {"run": run.key, "config": config, "generator_version": GENERATOR_VERSION}
        reason = study.stale_reason(run, record)
        if run is randn:
            assert reason == "config differs in embedding_norm (0.0 → 1.0)"
        else:
            assert reason is None, run.key
        record["config"]["embedding_norm"] = 1.0
        assert study.stale_reason(run, record) is None


def test_results_recorded_before_transfer_init_read_as_torch_init(tmp_path):
    """transfer_init was added after the study's runs: a recorded config without it used nn.Linear's
    default init (RECORDED_BEFORE), so it is current while the study trains with transfer_init='torch'
    (and becomes stale, rerun, if the study's runs switch to 'msra'); class-agnostic runs never read the field."""
    scale = SCALES["tiny"]
    study = Study(scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    for preset in ("transfer_clsbox_2lrelu", "agnostic"):
        run = Run(preset, "voc2nonvoc", 0, "resnet18")
        config = run.config(scale, "d").to_json()
        del config["transfer_init"]
        record = {"run": run.key, "config": config, "generator_version": GENERATOR_VERSION}
        assert study.stale_reason(run, record) is None, run.key


def test_notebook_iteration_overrides_reach_the_second_backbone_detector(tmp_path):
    from maskx_study.runner import rerun_or_load

    sc, _ = rerun_or_load(["t2"], scale="study", iters={"detector_iters": 5}, results_dir="r", root=tmp_path)
    assert (sc.detector_iters, sc.second_backbone_detector_iters) == (5, None)
    sc, _ = rerun_or_load(["t2"], scale="study", iters={"detector_iters": 5, "second_backbone_detector_iters": 3},
                          results_dir="r", root=tmp_path)
    assert sc.second_backbone_detector_iters == 3
    assert rerun_or_load(["t2"], scale="study", results_dir="r", root=tmp_path)[0] == SCALES["study"].__class__(
        **{**SCALES["study"].__dict__, "data": str(tmp_path / SCALES["study"].data)})
    # seeds named in a notebook run on both backbones (the second's beyond the budget too)
    sc, _ = rerun_or_load(["t2"], scale="study", seeds=[1], results_dir="r", root=tmp_path)
    assert {r.seed for r in plan(sc, ["t2"]) if r.backbone == sc.second_backbone} == {1}
