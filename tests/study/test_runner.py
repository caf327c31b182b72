"""The study runner (maskx_study/runner.py): stale results superseded and kept, detectors restored bit for
bit or retrained, resumable results, workers that share a plan, claims and locks.

The slow tests share the tiny study's trained runs (``tiny_study`` in tests/conftest.py)."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from maskx.checkpoint import find_checkpoint, model_state
from maskx.data.embedded import GENERATOR_VERSION
from maskx.train import cpu_signature
from maskx_study.runner import DIRECTIONS, EVAL_VERSION, SCALES, Run, Study, plan


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
            {"run": run.key, "config": config.to_json(), "generator_version": version, "eval_version": EVAL_VERSION}))
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
                                                  "generator_version": GENERATOR_VERSION, "eval_version": EVAL_VERSION}))
    study.run_dir(agn).mkdir(parents=True)
    moved = study.supersede_stale([agn])
    reason = json.loads(moved[0].read_text())["superseded"]["reason"]
    assert reason == "inference settings differ in detections_per_img (10 → 50), rpn_test_proposals (1000 → 300)"
    assert load_results(tmp_path / "results") == {} and study.run_dir(agn).is_dir()  # evaluated again, not retrained


def test_results_of_an_older_evaluation_are_measured_again_and_keep_their_weights(tmp_path):
    """A result measured by an older evaluation (``EVAL_VERSION``; no field: version 1) is moved aside and
    measured again: a run trained here keeps its weights; a detector not trained here keeps its result
    until it is restored (the result holds the checkpoint the restore must reproduce)."""
    from maskx_study.runner import load_results

    scale = SCALES["tiny"]
    det, agn = Run("detector", "all", 0, "resnet18"), Run("agnostic", "voc2nonvoc", 0, "resnet18")
    study = Study(scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", log=lambda m: None)
    det_dir = fake_detector_and_run(study, scale, det, agn, weights="same", recorded="same")
    study.run_dir(agn).mkdir(parents=True)
    assert study.supersede_stale([det, agn]) == []  # current
    for run in (det, agn):
        record = json.loads(study.result_path(run).read_text())
        del record["eval_version"]
        study.result_path(run).write_text(json.dumps(record))
    (det_dir / "done.json").unlink()  # a fresh clone: the detector's weights are not here
    moved = study.supersede_stale([det, agn])
    assert [json.loads(p.read_text())["run"] for p in moved] == [agn.key]
    assert json.loads(moved[0].read_text())["superseded"]["reason"] == f"evaluation version 1 → {EVAL_VERSION}: measured again"
    assert study.run_dir(agn).is_dir() and list(load_results(tmp_path / "results")) == [det.key]
    (det_dir / "done.json").write_text("{}")  # trained here: measured again too, its weights kept
    moved = study.supersede_stale([det, agn])
    assert len(moved) == 1 and load_results(tmp_path / "results") == {} and (det_dir / "done.json").is_file()


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
            {"run": r.key, "config": config.to_json(), "generator_version": GENERATOR_VERSION,
             "eval_version": EVAL_VERSION, **extra}))
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


@pytest.mark.slow  # trains 4 tiny runs (about a minute), then restores the detector
def test_a_fresh_clone_restores_and_measures_again_a_detector_an_older_evaluation_measured(tiny_study, tmp_path):
    """A detector result of an older evaluation whose weights are not here is pending although its result
    exists: it is restored (bit for bit), measured again, and the results built on it stand."""
    import shutil

    from maskx_study.runner import load_results

    study, runs, _ = tiny_study
    shutil.copytree(study.results_dir, tmp_path / "results")
    det = runs[0]
    old = {k: v for k, v in load_results(tmp_path / "results")[det.key].items() if k != "eval_version"}
    (tmp_path / "results" / f"{det.key}.json").write_text(json.dumps(old))
    clone = Study(study.scale, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", progress=False,
                  log=lambda m: None)
    assert clone.run(runs) == [clone.result_path(det)]
    after = load_results(tmp_path / "results")
    assert after[det.key]["eval_version"] == EVAL_VERSION and len(after[det.key]["restores"]) == 1
    assert after[det.key]["checkpoint_sha256"] == old["checkpoint_sha256"]
    assert after[det.key]["metrics"] == old["metrics"]  # the same weights and, for this backbone, the same input
    before = load_results(study.results_dir)
    assert {k: after[k] for k in before if k != det.key} == {k: v for k, v in before.items() if k != det.key}
    assert clone.run(runs) == []


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
    monkeypatch.setattr("maskx.data.embedded.ensure_dataset", lambda *a, **k: None)
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
    built (or when nothing else is ready), stage-wise runs are taken in plan order again. (End-to-end
    runs started from the detector alone: under ``e2e_from_stagewise`` one waits for its stage-wise run.)"""
    scale = dataclasses.replace(SCALES["tiny"], data=str(tmp_path / "data"), e2e_from_stagewise=False)
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
    monkeypatch.setattr("maskx.data.embedded.ensure_dataset", lambda *a, **k: None)
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

    from helpers import subprocess_env

    cmd = [sys.executable, "-m", "maskx", "study", "run", "--scale", "tiny", "--tables", "gate", "--jobs", "2",
           "--quiet", "--data", str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "r").glob("*.json")) == sorted(f"{r.key}.json" for r in plan(SCALES["tiny"], ["gate"]))
    assert not list((tmp_path / "runs").glob("*.lock"))


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
        record = {"run": run.key, "config": config, "generator_version": GENERATOR_VERSION, "eval_version": EVAL_VERSION}
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
        record = {"run": run.key, "config": config, "generator_version": GENERATOR_VERSION, "eval_version": EVAL_VERSION}
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


def test_an_end_to_end_run_waits_for_the_stage_wise_run_it_starts_from(tmp_path, monkeypatch):
    scale = dataclasses.replace(SCALES["tiny"], data=str(tmp_path / "data"))
    assert scale.e2e_from_stagewise
    study = Study(scale, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs", progress=False, log=lambda m: None)
    det = Run("detector", "all", 0, "resnet18")
    sw, e2e = Run("agnostic", "voc2nonvoc", 0, "resnet18"), Run("agnostic_e2e", "voc2nonvoc", 0, "resnet18")
    for r in (det,):
        study.run_dir(r).mkdir(parents=True)
        (study.run_dir(r) / "done.json").write_text("{}")
        study.result_path(r).parent.mkdir(parents=True, exist_ok=True)
        study.result_path(r).write_text(json.dumps({"run": r.key}))
    assert not study._init_ready(e2e) and study._init_ready(sw)
    assert study._config(e2e).mask_init == str(study.run_dir(sw))
    monkeypatch.setattr("maskx.data.embedded.ensure_dataset", lambda *a, **k: None)
    monkeypatch.setattr(Study, "supersede_stale", lambda self, runs: [])
    monkeypatch.setattr(Study, "add_gt_box_ious", lambda self, runs: [])
    taken = []

    def run_one(self, run):
        taken.append(run)
        self.run_dir(run).mkdir(parents=True, exist_ok=True)
        (self.run_dir(run) / "done.json").write_text("{}")
        self.result_path(run).write_text(json.dumps({"run": run.key}))
        return self.result_path(run)

    monkeypatch.setattr(Study, "run_one", run_one)
    study.run([det, e2e, sw], poll_seconds=0.01)  # listed first, the e2e run still goes after its start
    assert taken == [sw, e2e]
