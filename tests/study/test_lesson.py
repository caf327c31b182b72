"""The fifteen-minute lesson's plan (scale and table "lesson") and its helpers (maskx_study/lesson.py):
what the models are given, the table of AP and IoU, and the sentence on the gap (no training here;
the notebook itself is run by tests/test_notebooks.py)."""
from __future__ import annotations

import dataclasses

from maskx_study import lesson
from maskx_study.plan import ORDER, SCALES, TABLES, Run, plan, table_runs

from study_records import record

SCALE = SCALES["lesson"]


def test_the_lesson_plan_is_a_detector_and_three_stage_wise_heads_on_one_direction_and_seed():
    runs = plan(SCALE, ["lesson"])
    bb = SCALE.backbone
    assert runs == [Run("detector", "all", 0, bb), Run("agnostic", "voc2nonvoc", 0, bb),
                    Run("transfer_clsbox_2lrelu_mlp", "voc2nonvoc", 0, bb), Run("oracle", "all", 0, bb)]
    assert {Run(p, s, 0, bb).config(SCALE, "det").stage for p, s in
            (("agnostic", "voc2nonvoc"), ("oracle", "all"))} == {"mask"}
    # its runs are Tables 1a's and 1c's: the full study plan is the same with or without it
    study = SCALES["study"]
    assert ORDER[-1] == "lesson" and plan(study) == plan(study, [t for t in ORDER if t != "lesson"])
    assert set(table_runs("lesson", study)) <= set(table_runs("t1a", study, seeds=[0]) + table_runs("t1c", study))
    # the other tables still run in both directions
    assert {r.split for r in table_runs("t1c", study)} == {"voc2nonvoc", "nonvoc2voc"}


def test_the_lesson_scale_is_small_and_its_data_the_current_generators():
    from maskx.data.synthetic import SIZES

    size = SIZES[SCALE.data_size]
    assert size["image_size"] == 128 and size["train"] <= 1000 and size["val"] <= 200
    assert SCALE.seeds == (0,) and TABLES["lesson"].directions == ("voc2nonvoc",)
    det = Run("detector", "all", 0, SCALE.backbone).config(SCALE)
    assert det.image_size == 128 and det.iters == SCALE.detector_iters


def test_training_view_and_summary_show_set_a_with_masks_and_set_b_with_boxes(tmp_path):
    from maskx.data.embedded import GENERATOR_VERSION
    from maskx.data.synthetic import SIZES

    sc = dataclasses.replace(SCALES["tiny"], data=str(tmp_path / "data"))
    assert not lesson.ensure_data(sc, generate=False)  # missing, and not generated unless asked
    assert lesson.ensure_data(sc)
    s = lesson.split_summary(sc)
    assert (s["classes_A"], s["classes_B"], s["train_images"]) == (20, 60, SIZES["tiny"]["train"])
    assert s["instances_A_with_masks"] > 0 and s["instances_B_boxes_only"] > 0
    assert s["generator_version"] == GENERATOR_VERSION
    image = lesson.training_view(sc, n=2)
    size = SIZES["tiny"]["image_size"] * lesson.MAGNIFY
    assert image.height == size and size * 2 <= image.width <= size * 2 + 10


def _results(agnostic_b: float, transfer_b: float, oracle_b: float) -> dict:
    sc = SCALES["tiny"]
    runs = table_runs("lesson", sc)
    out = {}
    for r, b in zip(runs, (agnostic_b, transfer_b, oracle_b)):
        rec = record(r, b)
        for m in rec["metrics"].values():
            m["masks_on_gt_boxes"] = {"A": {"mean_iou": 0.5}, "B": {"mean_iou": b / 100}}
        out[r.key] = rec
    det = Run("detector", "all", 0, sc.backbone)
    out[det.key] = record(det, 12.0, 14.0)
    return out


def test_table_text_lists_ap_and_iou_on_a_and_b_and_the_detectors_box_ap():
    text = lesson.table_text(_results(10.0, 15.0, 30.0), SCALES["tiny"])
    lines = text.splitlines()
    assert lines[1].split()[-4:] == ["30.0", "10.0", "0.50", "0.10"]  # class-agnostic: AP A, AP B, IoU A, IoU B
    assert lines[3].startswith("fully supervised (oracle)") and "0.30" in lines[3]
    assert lines[4].startswith("detector") and "15.0" in lines[4] and "13.0" in lines[4]  # box AP on A, on B
    assert "pending" in lesson.table_text({}, SCALES["tiny"])


def test_verdict_states_the_share_of_the_gap_or_why_there_is_none():
    sc = SCALES["tiny"]
    assert "closed 25 % of that gap" in lesson.verdict(_results(10.0, 15.0, 30.0), sc)
    assert "no share of a gap" in lesson.verdict(_results(10.0, 15.0, 10.5), sc)
    assert "mode = \"train\"" in lesson.verdict({}, sc)
