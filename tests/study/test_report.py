"""RESULTS.md from results/ (maskx_study/report.py): the gate, the gap closed, seed statistics, Figure 3
points and the superseded history, computed from hand-made result records (no training)."""
from __future__ import annotations

import json

import pytest

from maskx_study import report
from maskx_study.runner import DIRECTIONS, SCALES, Run, plan, table_runs
from study_records import SCALE, gate_results, record


@pytest.mark.parametrize("agnostic_b,oracle_b,passed", [(10.0, 18.0, True), (10.0, 17.9, False), (8.9, 5.0, False)])
def test_gate_needs_the_oracle_8_ap_ahead_on_b(agnostic_b, oracle_b, passed):
    g = report.gate(gate_results(agnostic_b, oracle_b), SCALE)
    assert g["passed"] is passed and g["gap"] == pytest.approx(oracle_b - agnostic_b)
    assert report.gate({}, SCALE) is None  # pending until both runs exist


def test_gap_closed_from_seed_means_and_undefined_without_a_gap():
    runs = table_runs("t2", SCALE, backbones=["main"])
    b = {"agnostic_e2e": 10.0, "transfer_clsbox_2lrelu_mlp_e2e": 16.0, "oracle_e2e": 20.0, "agnostic_all_e2e": 19.0}
    results = {r.key: record(r, b[r.preset]) for r in runs}
    for d in DIRECTIONS:
        v = report.gap_closed(results, SCALE)[d]
        assert (v["gap"], v["closed_pct"]) == (pytest.approx(10.0), pytest.approx(60.0))
    b["oracle_e2e"] = 9.0  # the oracle behind the baseline: no share can be stated
    results = {r.key: record(r, b[r.preset]) for r in runs}
    assert report.gap_closed(results, SCALE)["voc2nonvoc"]["closed_pct"] is None


def test_transfer_minus_agnostic_is_paired_by_seed():
    import dataclasses

    scale = dataclasses.replace(SCALE, seeds=(0, 1, 2))
    runs = table_runs("t2", scale, backbones=["main"])
    b = {"agnostic_e2e": [10.0, 12.0, 14.0], "transfer_clsbox_2lrelu_mlp_e2e": [11.0, 12.0, 17.0],
         "oracle_e2e": [20.0, 20.0, 20.0], "agnostic_all_e2e": [19.0, 19.0, 19.0]}
    results = {r.key: record(r, b[r.preset][r.seed]) for r in runs}
    v = report.gap_closed(results, scale)["voc2nonvoc"]
    # seeds share a detector: the differences per seed (1, 0, 3), not the spread of each model's seeds
    assert v["paired"] == (pytest.approx(4 / 3), pytest.approx(1.5275, abs=1e-4), 3)
    # the share on each seed's own detector: (11-10)/(20-10), 0/8, (17-14)/(20-14)
    assert v["per_seed"] == {0: pytest.approx(10.0), 1: pytest.approx(0.0), 2: pytest.approx(50.0)}
    assert report._paired(v, "Mask^X") == ("; Mask^X − agnostic on B per seed: +1.3 ± 1.5 (n=3); "
                                           "closed per seed: s0 10 %, s1 0 %, s2 50 %")
    b["oracle_e2e"][1] = 11.0  # seed 1's oracle behind its agnostic head: no share for that seed
    v = report.gap_closed({r.key: record(r, b[r.preset][r.seed]) for r in runs}, scale)["voc2nonvoc"]
    assert v["per_seed"][1] is None and report._paired(v, "Mask^X").endswith("s0 10 %, s1 –, s2 50 %")
    # a seed without the transfer run is left out of the pairs; one pair says nothing
    del results[next(r.key for r in runs if r.preset.startswith("transfer") and r.seed == 2)]
    assert report.gap_closed(results, scale)["voc2nonvoc"]["paired"][2] == 2
    del results[next(r.key for r in runs if r.preset.startswith("transfer") and r.seed == 1)]
    assert report._paired(report.gap_closed(results, scale)["voc2nonvoc"], "Mask^X") == ""


def test_table_rows_average_seeds_and_say_pending():
    scale = SCALES["study"]
    agn = [r for r in table_runs("t1a", scale) if r.preset == "agnostic" and r.split == "voc2nonvoc"]
    assert len(agn) == 3
    results = {r.key: record(r, b) for r, b in zip(agn, (9.0, 10.0, 11.0))}
    rows = {row["preset"]: row for row in report.table_rows("t1a", results, scale)}
    mean, std, n = rows["agnostic"]["voc2nonvoc_B"]
    assert (mean, std, n) == (pytest.approx(10.0), pytest.approx(1.0), 3)
    assert report.fmt(rows["agnostic"]["voc2nonvoc_B"]) == "10.0 ± 1.0"
    assert rows["agnostic"]["nonvoc2voc_B"] is None and report.fmt(None) == "pending"


def test_fig3_relative_gain():
    runs = table_runs("fig3", SCALE)
    results = {r.key: record(r, 10.0 if r.preset == "agnostic" else 12.0, train_masks_per_A_class=7.5) for r in runs}
    pts = report.fig3_points(results, SCALE)
    assert len(pts) == len(SCALE.fig3_sizes) * SCALE.fig3_trials
    assert all(p["relative_gain_pct"] == pytest.approx(20.0) and p["masks_per_A_class"] == 7.5 for p in pts)
    assert {p["A_size"] for p in pts} == set(SCALE.fig3_sizes)


def test_write_report_lists_the_gate_and_its_superseded_history(tmp_path):
    res = tmp_path / "results"
    (res / "superseded").mkdir(parents=True)
    cache = {"detector_sha256": "d0", "per_image": 4, "rois": 99, "build_seconds": 360.0}
    for (key, rec), iou in zip(gate_results(8.87, 20.0).items(), (0.413, 0.657)):  # one detector's RoI cache
        rec["metrics"]["voc2nonvoc"] = {**rec["metrics"]["voc2nonvoc"],
                                        "masks_on_gt_boxes": {"A": {"mean_iou": 0.66}, "B": {"mean_iou": iou}}}
        (res / f"{key}.json").write_text(json.dumps({**rec, "roi_cache": cache}))
    _, agn, _ = table_runs("gate", SCALE)
    old = record(agn, 4.97, superseded={"reason": "config differs in mask_lr_mult (1.0 → 10.0)", "at": "20261126-081500"})
    (res / "superseded" / f"{agn.key}__20261126-081500.json").write_text(json.dumps(old))
    out = tmp_path / "RESULTS.md"
    summary = report.write_report(res, out, scale="tiny")
    text = out.read_text()
    assert summary["gate"]["passed"] and summary["runs"] == 2
    assert "class-agnostic 8.9, oracle 20.0 AP on B, gap 11.1 (passes" in text
    assert "mean mask IoU on B is 0.41 for the class-agnostic head and 0.66 for the oracle" in text
    assert f"- {agn.key}: segm AP on B 4.97" in text and "mask_lr_mult (1.0 → 10.0)" in text
    assert "superseded runs cost another 0.03 h" in text
    assert "0.15 h (training steps + evaluation + 1 RoI cache, 0.10 h" in text  # the shared cache counted once
    assert "pending" in text  # every table is rendered, unmeasured cells say so
    n = len(plan(SCALE))  # a partial study within the budget so far is not called within it
    assert f"Budget: 10 h (so far; {n - 2} of {n} runs to go: at the lower quartile of their kinds' times they add ≈ " in text
    assert "run(s) of kinds not measured yet)." in text
    # where the time goes: one kind measured (2 runs), the shared RoI cache once (360 s as a 1-thread build)
    assert "| mask voc2nonvoc resnet18 | 1 | " in text and "| mask all resnet18 | 1 | " in text
    assert "| RoI cache (one per detector, 1 thread) | 1 | 0 | 3.0 | 0.05 |" in text


def test_earlier_gates_pair_the_runs_superseded_together():
    _, agn, ora = table_runs("gate", SCALE)
    def old(run, b, at):
        return {**record(run, b), "superseded": {"at": at, "reason": "its detector was retrained"}}
    history = [old(agn, 5.0, "t1"), old(ora, 14.0, "t1"), old(agn, 6.0, "t2")]  # t2: the oracle not superseded then
    gates = report.earlier_gates(history, SCALE)
    assert [(e["at"], e["gap"], e["passed"]) for e in gates] == [("t1", pytest.approx(9.0), True)]


def test_report_says_when_the_gate_passed_at_freeze_but_not_on_the_current_detector(tmp_path):
    _, agn, ora = table_runs("gate", SCALE)
    (tmp_path / "superseded").mkdir(parents=True)
    for run, b in ((agn, 5.0), (ora, 14.0)):
        (tmp_path / f"{run.key}.json").write_text(json.dumps(record(run, {"agnostic": 5.5, "oracle": 13.0}[run.preset])))
        (tmp_path / "superseded" / f"{run.key}__t1.json").write_text(json.dumps(
            {**record(run, b), "superseded": {"at": "t1", "reason": "its detector was retrained"}}))
    report.write_report(tmp_path, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert "gap 7.5 (FAILS" in text and "frozen for the study when the gate passed" in text and "gap 9.0" in text


def test_headline_flags_a_tiny_gap_an_oracle_behind_on_a_and_gives_the_stage_wise_share(tmp_path):
    b = {"agnostic_e2e": 10.0, "transfer_clsbox_2lrelu_mlp_e2e": 10.3, "oracle_e2e": 10.5,  # gap 0.5: noise
         "agnostic_all_e2e": 10.4, "agnostic": 10.0, "transfer_clsbox_2lrelu": 14.0, "oracle": 20.0}
    a = {"agnostic_e2e": 30.0, "oracle_e2e": 28.0}  # the e2e oracle trails on its own set A
    runs = table_runs("t2", SCALE, backbones=["main"]) + [r for r in table_runs("t1a", SCALE) if r.preset in b]
    for r in runs:
        (tmp_path / f"{r.key}.json").write_text(json.dumps(record(r, b[r.preset], a.get(r.preset, 30.0))))
    report.write_report(tmp_path, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert "gap 0.5, closed **60 %**" in text and "a gap under 1 AP makes this share noise" in text
    assert "the oracle's AP on set A is below the class-agnostic head's (voc→non-voc: 28.0 vs 30.0" in text
    assert "transfer 14.0, oracle 20.0 AP on B (set A: 30.0, 30.0, 30.0): gap 10.0, closed **40 %**" in text
    a["oracle_e2e"] = 30.0  # level on A: no such note
    for r in runs:
        (tmp_path / f"{r.key}.json").write_text(json.dumps(record(r, b[r.preset], a.get(r.preset, 30.0))))
    report.write_report(tmp_path, tmp_path / "R.md", scale="tiny")
    assert "below the class-agnostic head's" not in (tmp_path / "R.md").read_text()


def test_a_run_far_below_the_class_agnostic_head_on_set_a_is_flagged_as_failed():
    """randn at raw norm sat at zero logits: AP on A 3.9 against the agnostic head's 11.6. A weaker
    but trained run (75 %), a detector and runs without an agnostic reference are not flagged."""
    runs = {r.preset: r for r in table_runs("t1a", SCALE) if r.split in ("voc2nonvoc", "all") and r.seed == 0}
    det = Run("detector", "all", 0, SCALE.backbone)
    results = {runs["agnostic"].key: record(runs["agnostic"], 5.0, a=11.6),
               runs["transfer_randn_2lrelu"].key: record(runs["transfer_randn_2lrelu"], 4.6, a=3.9),
               runs["transfer_glove_2lrelu"].key: record(runs["transfer_glove_2lrelu"], 4.0, a=8.7),
               det.key: record(det, 0.0, a=0.0)}
    e2e = Run("transfer_clsbox_2lrelu_mlp_e2e", "voc2nonvoc", 0, SCALE.backbone)  # its reference is agnostic_e2e
    results[e2e.key] = record(e2e, 1.0, a=1.0)
    failed = report.failed_trainings(results)
    assert failed == [{"run": runs["transfer_randn_2lrelu"].key, "split": "voc2nonvoc", "A": 3.9, "agnostic_A": 11.6}]


def test_report_lists_failed_runs_and_the_superseded_raw_embedding_rows(tmp_path):
    runs = {r.preset: r for r in table_runs("t1a", SCALE) if r.split in ("voc2nonvoc", "all") and r.seed == 0}
    res = tmp_path / "results"
    (res / "superseded").mkdir(parents=True)
    agn, randn = runs["agnostic"], runs["transfer_randn_2lrelu"]
    (res / f"{agn.key}.json").write_text(json.dumps(record(agn, 5.0, a=11.6)))
    (res / f"{randn.key}.json").write_text(json.dumps(record(randn, 4.6, a=3.9)))
    old = record(randn, 4.6, a=3.9)
    old["config"]["embedding_norm"] = 0.0
    old["superseded"] = {"reason": "config differs in embedding_norm (0.0 → 1.0)", "at": "20261130-203900"}
    (res / "superseded" / f"{randn.key}__20261130-203900.json").write_text(json.dumps(old))
    report.write_report(res, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert f"- {randn.key} (voc2nonvoc): 3.9 vs 11.6" in text
    assert "- randn, voc→non-voc, seed 0: 3.9 | 4.6" in text


def test_tables_show_mask_iou_on_ground_truth_boxes_when_runs_have_it(tmp_path):
    runs = [r for r in table_runs("t1a", SCALE) if r.seed == 0 and r.preset in ("agnostic", "oracle")]
    res = tmp_path / "results"
    res.mkdir()
    for r in runs:
        rec = record(r, 5.0)
        iou = 0.68 if r.preset == "oracle" else 0.46
        for d in rec["metrics"]:
            rec["metrics"][d] = {**rec["metrics"][d], "masks_on_gt_boxes": {
                "A": {"mean_iou": 0.67, "ceiling": 0.93, "instances": 64},
                "B": {"mean_iou": iou, "ceiling": 0.93, "instances": 209}}}
        (res / f"{r.key}.json").write_text(json.dumps(rec))
    rows = {row["preset"]: row for row in report.table_rows("t1a", report.load_results(res), SCALE)}
    assert rows["oracle"]["voc2nonvoc_gt_iou_B"] == (pytest.approx(0.68), 0.0, 1)
    assert rows["transfer_cls_2lrelu"]["voc2nonvoc_gt_iou_B"] is None
    report.write_report(res, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert "| class-agnostic (baseline) | 0.46 | 0.67 | 0.46 | 0.67 |" in text
    assert "| transfer w/ cls | pending | pending | pending | pending |" in text


def test_detector_box_ap_per_backbone_reads_voc_and_nonvoc_from_the_detector_runs():
    scale = SCALES["study"]
    dets = {r.detector() for r in table_runs("t2", scale, backbones=["second"])}
    assert {d.backbone for d in dets} == {scale.second_backbone}
    results = {d.key: record(d, b=3.0, a=2.0) for d in dets}  # voc2nonvoc: A = voc, B = non-voc
    box = report.detector_box_ap(results, scale, "second")
    assert box["voc"][:1] == (pytest.approx(3.0),) and box["nonvoc"][:1] == (pytest.approx(4.0),)
    assert report.detector_box_ap(results, scale, "main") == {"voc": None, "nonvoc": None}


def test_table_2_shows_size_aps_only_where_every_mask_was_computed():
    import dataclasses

    skip = dataclasses.replace(SCALE, eval_skip_absent_masks=True)
    every = dataclasses.replace(SCALE, eval_skip_absent_masks=False)
    assert report.table2_stats(skip) == ("AP", "AP50", "AP75")
    assert report.table2_stats(every) == ("AP", "AP50", "AP75", "APs", "APm", "APl")
    row = report.table2_detail({}, skip, "main")[0]
    assert "voc2nonvoc_AP75" in row and not any(k.endswith(("APs", "APm", "APl")) for k in row)
    assert "nonvoc2voc_APl" in report.table2_detail({}, every, "main")[0]


def test_table_2_reports_the_second_backbones_seeds_beyond_the_budget():
    from maskx_study.runner import beyond_budget

    scale = SCALES["study"]
    assert scale.second_backbone_seeds == (0,)
    runs = table_runs("t2", beyond_budget(scale), backbones=["second"])
    results = {r.key: record(r, b=float(r.seed)) for r in [*runs, *{r.detector() for r in runs}]}
    agnostic = next(row for row in report.table_rows("t2", results, scale, "second") if row["preset"] == "agnostic_e2e")
    assert agnostic["voc2nonvoc_B"] == (pytest.approx(1.0), pytest.approx(1.0), 3)
    assert report.gap_closed(results, scale, "second")["voc2nonvoc"]["paired"][2] == 3
    assert report.detector_box_ap(results, scale, "second")["voc"][2] == 3


def test_coverage_splits_b_classes_by_whether_a_shares_their_family():
    """Version 3, voc→non-voc: B classes of families with voc-like classes are "covered", the others
    "unseen"; per class AP is averaged within each group, then over seeds."""
    from maskx.data.embedded import categories, voc_like_category_ids

    cats = categories(3)
    family = {c["id"]: c["supercategory"] for c in cats}
    a_ids = voc_like_category_ids(3)
    seen = {family[c] for c in a_ids}
    b_ids = [c["id"] for c in cats if c["id"] not in set(a_ids)]
    runs = [r for r in table_runs("t1a", SCALE) if r.preset in ("agnostic", "oracle")]
    results = {}
    for r in runs:
        def ap(c):  # covered B classes 10 (oracle 20), unseen ones 2 (oracle 12), set A 30
            return 30.0 if c in set(a_ids) else (10.0 if family[c] in seen else 2.0) + (10.0 if r.preset == "oracle" else 0)
        rec = record(r, 0.0)
        rec["generator_version"] = 3
        for d in rec["metrics"]:
            rec["metrics"][d] = {**rec["metrics"][d], "split": {"A": a_ids, "B": b_ids},
                                 "per_class": {str(c["id"]): {"category_id": c["id"], "set": "A" if c["id"] in set(a_ids) else "B",
                                                              "segm_AP": ap(c["id"])} for c in cats}}
        results[r.key] = rec
    out = report.coverage(results, SCALE, "voc2nonvoc", rows=(("agnostic", "agnostic"), ("oracle", "oracle")))
    assert out["agnostic"]["covered"][0] == pytest.approx(10.0) and out["agnostic"]["unseen"][0] == pytest.approx(2.0)
    assert out["oracle"]["covered"][0] == pytest.approx(20.0) and out["oracle"]["unseen"][0] == pytest.approx(12.0)
    covered, unseen = out["agnostic"]["classes"]
    assert covered + unseen == 60 and covered > 0 and unseen > 0
    agnostic = next(r for r in runs if r.preset == "agnostic")
    results[agnostic.key]["generator_version"] = 1  # a world no longer drawable is left out, not guessed
    out = report.coverage(results, SCALE, "voc2nonvoc", rows=(("agnostic", "agnostic"), ("oracle", "oracle")))
    assert out["agnostic"]["covered"] is None and out["oracle"]["covered"] is not None


def test_the_report_puts_version_3_beside_the_current_world(tmp_path):
    """A results folder with a v3/ subfolder: RESULTS.md gets the side-by-side section, each world's
    numbers read from its own folder."""
    runs = table_runs("t2", SCALE, backbones=["main"]) + [r for r in table_runs("t1a", SCALE)]
    (tmp_path / "v3").mkdir()
    for r in runs:
        (tmp_path / f"{r.key}.json").write_text(json.dumps({**record(r, 20.0), "generator_version": 4}))
        (tmp_path / "v3" / f"{r.key}.json").write_text(json.dumps({**record(r, 7.0), "generator_version": 3}))
    report.write_report(tmp_path, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert "## Version 3 beside this world: the counter-example" in text
    row = next(line for line in text.splitlines() if line.startswith("| class-agnostic, end-to-end |"))
    assert row == "| class-agnostic, end-to-end | 7.0 | 7.0 | 20.0 | 20.0 |"
    assert "| v3 voc→non-voc | v3 non-voc→voc | v4 voc→non-voc | v4 non-voc→voc |" in text


def test_report_shows_the_diagnostics_table_of_each_seed_of_this_world_only(tmp_path):
    """results/diagnostics/v<version>_s<seed>_<direction>.json of the results' generator version, by seed
    and direction; another version's record and design records stay out."""
    diag = tmp_path / "diagnostics"
    diag.mkdir()

    def rec(version, seed, split, rho):
        return {"generator_version": version, "seed": seed, "split": split, "A_classes": 20, "classes": 80,
                "images": 100, "embeddings": {"cls+box": {"similarity": {"rho": rho, "nearest_a_shares": 0.9,
                                                                         "chance_shares": 0.3},
                                                          "similarity_centred": {"rho": rho},
                                                          "probe": {"iou_B": 0.5, "gap_closed_B": 0.4}}},
                "iou_on_gt_boxes": {"agnostic": {"A": 0.6, "B": 0.4}}, "spread": {"transfer": {"spread": 0.2}},
                "oracle_minus_agnostic_B": 0.2, "class_value_B": 0.05}

    for name, r in {"v4_s1_voc2nonvoc": rec(4, 1, "voc2nonvoc", 0.61), "v4_s0_nonvoc2voc": rec(4, 0, "nonvoc2voc", 0.62),
                    "v4_s0_voc2nonvoc": rec(4, 0, "voc2nonvoc", 0.63), "v3_s0_voc2nonvoc": rec(3, 0, "voc2nonvoc", 0.11),
                    "design_v4b_rand20": rec(4, 0, "rand20_t0", 0.99)}.items():
        (diag / f"{name}.json").write_text(json.dumps(r))
    run = Run("detector", "all", 0, SCALE.backbone)
    (tmp_path / f"{run.key}.json").write_text(json.dumps({**record(run, 0.0), "generator_version": 4}))
    report.write_report(tmp_path, tmp_path / "R.md", scale="tiny")
    text = (tmp_path / "R.md").read_text()
    assert "## Can transfer work here?" in text
    heads = [line for line in text.splitlines() if line.startswith("### World v")]
    assert [h.split(" (")[0] for h in heads] == ["### World v4, voc2nonvoc, seed 0", "### World v4, nonvoc2voc, seed 0",
                                                 "### World v4, voc2nonvoc, seed 1"]
    assert "0.11" not in text and "0.99" not in text
