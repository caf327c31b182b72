"""maskx_study.embedding_views (the embedding notebook's views): which record it shows, which set-B
classes it lists, its table, UMAP panels and nearest-A tables, and what it says when pieces are missing."""
from __future__ import annotations

import json
from pathlib import Path

from maskx_study import embedding_views as ev


def _record(per_class: bool = True) -> dict:
    """A small record as scripts/diagnostics.py writes it: 2 A classes, 3 B classes, views for two kinds."""
    names = [("red disc", "A"), ("blue star", "A"), ("blue disc", "B"), ("red star", "B"), ("green ring", "B")]
    classes = [{"id": i + 1, "name": n, "set": s, "attributes": [f"hue:{n.split()[0]}", f"body:{n.split()[1]}"]}
               for i, (n, s) in enumerate(names)]
    rec = {"generator_version": 4, "split": "rand20_t0", "seed": 0, "split_seed": 4242, "classes": 5, "A_classes": 2,
           "images": 100, "detector_box_ap": {"all": 30.0},
           "iou_on_gt_boxes": {"agnostic": {"A": 0.5, "B": 0.4}, "oracle": {"A": 0.6, "B": 0.7}},
           "embeddings": {"cls+box": {"similarity": {"rho": 0.69}, "similarity_centred": {
               "rho": 0.7, "nearest_a_shares": 0.95, "chance_shares": 0.42}, "probe": {"gap_closed_B": -0.8},
               "probe_calibrated": {"gap_closed_B": 0.95}}, "text": {"error": "ImportError: no text extra"}},
           "spread": {"oracle": {"spread": 4.2}, "transfer": {"spread": 0.18}}, "class_value_B": 0.027,
           "class_list": classes, "view_errors": {},
           "nearest_A": {k: {"3": [[1, 0.8], [2, 0.1]], "4": [[2, 0.5], [1, -0.2]], "5": [[1, 0.0], [2, -0.1]]}
                         for k in ("randn", "cls+box")},
           "projection": {k: [[float(i), float(i % 2)] for i in range(5)] for k in ("randn", "cls+box")}}
    if per_class:
        rec["per_class_iou_on_gt_boxes"] = {"oracle": {"3": 0.9, "4": 0.6, "5": 0.5},
                                            "agnostic": {"3": 0.2, "4": 0.5, "5": 0.1}}
    return rec


def test_the_record_rule_prefers_the_study_then_the_newest_design_record(tmp_path):
    committed, results = tmp_path / "committed", tmp_path / "results"
    committed.mkdir()
    (results / "diagnostics").mkdir(parents=True)
    assert ev.find_record(results, "voc2nonvoc", 0, committed=committed)[0] is None
    for name in ("design_v4b_x.json", "design_v4c_x.json"):
        (committed / name).write_text("{}")
    path, why = ev.find_record(results, "voc2nonvoc", 0, committed=committed)
    assert path.name == "design_v4c_x.json" and "design" in why
    for name in ("v3_s0_voc2nonvoc.json", "v4_s1_voc2nonvoc.json", "v4_s0_nonvoc2voc.json"):  # v3, other seed/direction
        (results / "diagnostics" / name).write_text("{}")
    assert ev.find_record(results, "voc2nonvoc", 0, committed=committed)[0].name == "design_v4c_x.json"
    (results / "diagnostics" / "v4_s0_voc2nonvoc.json").write_text("{}")
    (results / "diagnostics" / "v5_s0_voc2nonvoc.json").write_text("{}")
    path, why = ev.find_record(results, "voc2nonvoc", 0, committed=committed)
    assert path.name == "v5_s0_voc2nonvoc.json" and "study" in why and "v5" in why
    assert ev.find_record(results, "voc2nonvoc", 0, "design_v4b_x.json", committed)[0].name == "design_v4b_x.json"
    missing, why = ev.find_record(results, "voc2nonvoc", 0, "nope.json", committed)
    assert missing is None and "nope.json" in why


def test_without_a_study_record_the_gate_record_else_the_last_design_record_by_name(tmp_path):
    committed = tmp_path / "diag"
    committed.mkdir()
    for name in ("design_v4c.json", "design_v4z.json", ev.GATE_RECORD):
        (committed / name).write_text("{}")
    path, why = ev.find_record(tmp_path / "results", "voc2nonvoc", 0, committed=committed)
    assert path.name == ev.GATE_RECORD and "design gate" in why
    (committed / ev.GATE_RECORD).unlink()
    path, why = ev.find_record(tmp_path / "results", "voc2nonvoc", 0, committed=committed)
    assert path.name == "design_v4z.json" and "by name" in why


def test_chosen_b_classes_by_the_oracle_agnostic_gap_else_by_id():
    ids, rule = ev.chosen_b_classes(_record(), 2)
    assert ids == [3, 5] and "largest oracle − class-agnostic gap" in rule and "blue disc +0.70" in rule
    ids, rule = ev.chosen_b_classes(_record(per_class=False), 2)
    assert ids == [3, 4] and "first 2 set-B classes by id" in rule and "--per-class-iou" in rule
    assert ev.chosen_b_classes(None)[0] == []


def test_tables_and_panels(tmp_path):
    rec = _record()
    table = ev.summary_table(rec)
    assert "| w_cls+box | 0.69 | 0.70 | 0.95 (0.42) | -80 % | 95 % |" in table
    assert "ImportError" in table and "not measured" in table  # text failed; the others are absent
    assert "**0.027**" in table and "T(cls+box) **0.18**" in table
    near = ev.nearest_table(rec, 3, k=2)
    assert "**B: blue disc**" in near and "class-agnostic 0.20" in near
    assert "red disc (0.80; disc)" in near and "blue star (0.10; blue)" in near
    assert "| GloVe | not computed |" in near
    assert "green ring" not in near
    assert "red disc (0.00; **nothing**)" in ev.nearest_table(rec, 5, k=2)
    fig = ev.umap_figure(rec, [3])
    assert [a.text for a in fig.layout.annotations] == ["randn", "w_cls+box"]
    points = [t for t in fig.data if t.x != (None,)]
    assert len(points) == 4 and points[1].text[0] == "blue disc"  # A and B traces per panel; chosen named
    legend = [t.name for t in fig.data if t.x == (None,)]  # the sets' colours, then one symbol per body
    assert legend == ["set A (masks in training)", "set B (boxes only)", "disc", "ring", "star"]
    assert {t.marker.symbol for t in fig.data if t.name in ("disc", "star")} == {"circle", "star"}
    assert ev.missing_views(rec, Path("r.json")) == ""


def test_missing_pieces_are_said_not_raised(tmp_path):
    old = {k: v for k, v in _record().items() if k not in ("class_list", "nearest_A", "projection")}
    msg = ev.missing_views(old, Path("results/diagnostics/old.json"))
    assert "--embeddings-only --out results/diagnostics/old.json" in msg
    assert ev.umap_figure(old) is None and ev.umap_figure(None) is None
    assert "no diagnostics record" in ev.summary_table(None) and "no diagnostics record" in ev.missing_views(None, None)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_record()))
    assert ev.load_record(path)["split"] == "rand20_t0" and ev.load_record(None) is None
    assert "world v4" in ev.describe(ev.load_record(path), path, "why")


def test_grid_note_says_what_is_missing():
    from maskx_study.plan import SCALES

    sc = SCALES["tiny"]
    assert "no Table 1a results" in ev.grid_note({}, sc, "voc2nonvoc", 0)
    rec = {"preset": "agnostic", "split": "voc2nonvoc", "seed": 0, "backbone": sc.backbone}
    assert "no kept masks" in ev.grid_note({"k": rec}, sc, "voc2nonvoc", 0)
    kept = {**rec, "gt_box_masks": {"instances": [{"image": 0}]}}
    note = ev.grid_note({"k": kept}, sc, "voc2nonvoc", 0)
    assert "1 of 8 columns" in note and "T(randn)" in note
