"""Tables of the study from ``results/*.json``, beside the paper's numbers; ``RESULTS.md``.

    python -m maskx study report            # writes RESULTS.md

Numbers are segm (mask) AP, 0-100, mean ± standard deviation over seeds (n given). The paper's
numbers are ResNet-50-FPN on COCO val2017 (Tables 1 and 2), quoted for their ordering, not for
their level: the embedded data is a different, smaller world.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from maskx_study.plan import ARROW
from maskx_study.runner import (DIRECTIONS, FIG3_ROWS, STUDY_GT_BOX_IMAGES, SCALES, TABLES, Run, StudyScale, load_results,
                    beyond_budget, load_superseded, table_runs)
from maskx_study.cost import cost_section

# (AP on B, AP on A) for voc→non-voc, then (AP on B, AP on A) for non-voc→voc; R-50-FPN, COCO
PAPER = {
    "t1a": {"transfer w/ randn": (15.4, 35.2, 19.9, 31.1), "transfer w/ GloVe": (17.3, 35.2, 21.9, 31.1),
            "transfer w/ cls": (18.1, 35.1, 25.2, 31.1), "transfer w/ box": (19.8, 35.2, 25.7, 31.1),
            "transfer w/ cls+box": (20.2, 35.2, 26.0, 31.2), "class-agnostic (baseline)": (14.2, 34.4, 21.5, 30.7),
            "fully supervised (oracle)": (30.7, 35.0, 35.0, 30.7)},
    "t1b": {"transfer w/ 1-layer, none": (19.2, 35.2, 25.3, 31.2), "transfer w/ 2-layer, ReLU": (19.7, 35.3, 25.1, 31.1),
            "transfer w/ 2-layer, LeakyReLU": (20.2, 35.2, 26.0, 31.2),
            "transfer w/ 3-layer, ReLU": (19.3, 35.2, 26.0, 31.1),
            "transfer w/ 3-layer, LeakyReLU": (18.9, 35.2, 25.5, 31.1)},
    "t1c": {"class-agnostic": (14.2, 34.4, 21.5, 30.7), "class-agnostic+MLP": (17.1, 35.1, 22.8, 31.3),
            "transfer": (20.2, 35.2, 26.0, 31.2), "transfer+MLP": (21.3, 35.4, 26.6, 31.4)},
    "t1d": {"class-agnostic, SW": (14.2, 34.4, 21.5, 30.7), "transfer, SW": (20.2, 35.2, 26.0, 31.2),
            "class-agnostic, e2e": (19.2, 36.8, 23.9, 32.5), "transfer, e2e, no stop-grad": (20.2, 37.7, 24.8, 33.2),
            "transfer, e2e, stop-grad": (22.2, 37.6, 27.6, 33.1)},
    # Table 2 (R-50-FPN): AP on B for each direction
    "t2": {"class-agnostic (baseline)": (19.2, None, 23.9, None), "Mask^X R-CNN (transfer+MLP)": (23.7, None, 28.9, None),
           "fully supervised (oracle)": (33.0, None, 37.5, None)},
}
PAPER_GAP_CLOSED = {"voc2nonvoc": 33, "nonvoc2voc": 37}  # Table 2 R-50: (Mask^X - agnostic) / (oracle - agnostic)
# what a world designed for transfer (generator version 4, docs/world-design.md) should let Mask^X close
EXPECTED_GAP_CLOSED = 40
# The data-design gate: the embedded data can answer the paper's question (§3.1: does class knowledge
# help masks?) only if the oracle leads the class-agnostic head on B (stage-wise, voc→non-voc) by this much
GATE_MIN_GAP = 8.0
MIN_MEANINGFUL_GAP = 1.0  # AP on B: below it, seed-to-seed noise (about 1 AP here) swamps the share
# a run whose mask AP on set A is under this share of the class-agnostic head's (same split, seed, stage)
# did not train: set A has mask labels for every model, so the class-agnostic head is a floor there
FAILED_TRAINING_SHARE = 0.5


def _per_run(results: dict, runs, direction: str, pick) -> list[float]:
    """``pick(metrics of direction)`` for each run that has a result there and a value (None: skipped)."""
    out = []
    for r in dict.fromkeys(runs):  # the oracle (split 'all') is listed under both directions
        rec = results.get(r.key)
        if rec is not None and direction in rec["metrics"]:
            v = pick(rec["metrics"][direction])
            if v is not None:
                out.append(v)
    return out


def _values(results: dict, runs, direction: str, set_name: str, metric: str = "segm_AP") -> list[float]:
    return _per_run(results, runs, direction, lambda m: m[set_name].get(metric))


def _gt_box_ious(results: dict, runs, direction: str, set_name: str) -> list[float]:
    """Mean mask IoU on ground-truth boxes and classes (``gt_box_eval``), one per run that has it."""
    return _per_run(results, runs, direction,
                    lambda m: (m.get("masks_on_gt_boxes") or {}).get(set_name, {}).get("mean_iou"))


def reported_runs(name: str, scale: StudyScale, backbone: str) -> list:
    """The runs a table reports on one backbone: the plan's and those its budget leaves out
    (``beyond_budget``: Table 2's second backbone on seeds beyond the first), where results has them."""
    return table_runs(name, beyond_budget(scale), backbones=[backbone])


def mean_std(values: list[float]) -> Optional[tuple[float, float, int]]:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def fmt(ms: Optional[tuple[float, float, int]], with_n: bool = False, digits: int = 1) -> str:
    if ms is None:
        return "pending"
    m, s, n = ms
    text = f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
    return text + (f" (n={n})" if with_n and n > 1 else "")


def table_rows(name: str, results: dict, scale: StudyScale, backbone: str = "main") -> list[dict]:
    """One dict per row: label, preset, and per direction mean/std/n of segm AP on B and on A."""
    table = TABLES[name]
    runs = reported_runs(name, scale, backbone)
    rows = []
    for label, preset in table.rows:
        row = {"label": label, "preset": preset}
        for d in DIRECTIONS:
            mine = [r for r in runs if r.preset == preset and (r.split == d or r.split == "all")]
            row[f"{d}_B"] = mean_std(_values(results, mine, d, "B"))
            row[f"{d}_A"] = mean_std(_values(results, mine, d, "A"))
            row[f"{d}_B_seeds"] = _values(results, mine, d, "B")
            for set_name in ("A", "B"):
                row[f"{d}_gt_iou_{set_name}"] = mean_std(_gt_box_ious(results, mine, d, set_name))
        rows.append(row)
    return rows


# Per-class AP on B split by whether set A covers the class's look (``coverage``): Table 1a's rows
COVERAGE_ROWS = (("class-agnostic", "agnostic"), ("transfer w/ randn", "transfer_randn_2lrelu"),
                 ("transfer w/ cls+box", "transfer_clsbox_2lrelu"), ("oracle", "oracle"),
                 ("class-agnostic, every class's masks", "agnostic_all"))


def coverage(results: dict, scale: StudyScale, direction: str, rows=COVERAGE_ROWS, table: str = "t1a") -> dict:
    """Segm AP on B per class, averaged over the B classes whose supercategory (the family in version 3,
    the body from version 4 on) some A class shares ("covered") and over the others ("unseen"), then
    over seeds: where A never saw a look, transfer has nothing to carry. Categories come from the
    generator version each result records. Returns {label: {"covered": mean_std, "unseen": mean_std,
    "classes": (n covered, n unseen), None before any result}}."""
    from maskx.data.embedded import WORLDS, categories

    runs = [r for r in reported_runs(table, scale, "main") if r.split in (direction, "all")]
    out = {}
    for label, preset in rows:
        per = {"covered": [], "unseen": []}
        counts = None
        for r in dict.fromkeys(x for x in runs if x.preset == preset):
            rec = results.get(r.key)
            m = (rec or {}).get("metrics", {}).get(direction)
            if m is None or rec.get("generator_version") not in WORLDS or not {"split", "per_class"} <= set(m):
                continue
            family = {c["id"]: c["supercategory"] for c in categories(rec["generator_version"])}
            seen = {family[c] for c in m["split"]["A"]}
            groups = {"covered": [], "unseen": []}
            for c in m["per_class"].values():
                if c["set"] == "B" and c.get("segm_AP") is not None and c["segm_AP"] >= 0:
                    groups["covered" if family[c["category_id"]] in seen else "unseen"].append(c["segm_AP"])
            for k, v in groups.items():
                if v:
                    per[k].append(statistics.fmean(v))
            counts = (len(groups["covered"]), len(groups["unseen"]))
        out[label] = {"covered": mean_std(per["covered"]), "unseen": mean_std(per["unseen"]), "classes": counts}
    return out


def table2_stats(scale: StudyScale) -> tuple:
    """The paper's Table 2 columns; APs/m/l only where evaluation computes every mask (not under
    ``eval_skip_absent_masks``, which keeps AP, AP50 and AP75 exact)."""
    return ("AP", "AP50", "AP75") + (() if scale.eval_skip_absent_masks else ("APs", "APm", "APl"))


def table2_detail(results: dict, scale: StudyScale, backbone: str) -> list[dict]:
    """Table 2 rows: segm ``table2_stats`` (AP, AP50, AP75[, APs, APm, APl]) on set B per direction
    (mean over seeds)."""
    runs = reported_runs("t2", scale, backbone)
    rows = []
    for label, preset in TABLES["t2"].rows:
        row = {"label": label}
        for d in DIRECTIONS:
            mine = [r for r in runs if r.preset == preset and (r.split == d or r.split == "all")]
            for stat in table2_stats(scale):
                row[f"{d}_{stat}"] = mean_std(_values(results, mine, d, "B", f"segm_{stat}"))
        rows.append(row)
    return rows


def gap_closed(results: dict, scale: StudyScale, backbone: str = "main", table: str = "t2",
               rows: tuple = ("agnostic_e2e", "transfer_clsbox_2lrelu_mlp_e2e", "oracle_e2e")) -> dict:
    """Share of the agnostic→oracle gap on B that the transfer model closes, per direction (from
    seed means): ``{direction: {"agnostic", "transfer", "oracle", "gap", "closed_pct", "paired", "A": {...}}}``
    (``"A"``: the same three models' AP on set A; ``"paired"``: mean ± std of transfer − agnostic AP on
    B over the seeds that have both, which share a detector, or None)."""
    bb = {"main": scale.backbone, "second": scale.second_backbone}[backbone]
    out = {}
    reported = reported_runs(table, scale, backbone)
    for d in DIRECTIONS:
        vals, on_a, by_seed = {}, {}, {}
        for name, preset in zip(("agnostic", "transfer", "oracle"), rows):
            runs = [r for r in reported
                    if r.preset == preset and (r.split in (d, "all")) and r.backbone == bb]
            by_seed[name] = {r.seed: v[0] for r in runs if (v := _values(results, [r], d, "B"))}
            ms = mean_std(list(by_seed[name].values()))
            vals[name] = ms[0] if ms else None
            ms = mean_std(_values(results, runs, d, "A"))
            on_a[name] = ms[0] if ms else None
        if None not in vals.values():
            gap = vals["oracle"] - vals["agnostic"]
            vals.update(gap=gap, closed_pct=100 * (vals["transfer"] - vals["agnostic"]) / gap if gap > 0 else None)
        both = sorted(set(by_seed["agnostic"]) & set(by_seed["transfer"]))
        vals["paired"] = mean_std([by_seed["transfer"][k] - by_seed["agnostic"][k] for k in both])
        per_seed = {}  # the share on each seed's own detector; None where its oracle is not ahead
        for k in sorted(set(both) & set(by_seed["oracle"])):
            g = by_seed["oracle"][k] - by_seed["agnostic"][k]
            per_seed[k] = 100 * (by_seed["transfer"][k] - by_seed["agnostic"][k]) / g if g > 0 else None
        out[d] = {**vals, "per_seed": per_seed, "A": on_a}
    return out


def _paired(v: dict, label: str) -> str:
    """``"; transfer − agnostic on B per seed: +0.2 ± 0.9 (n=3); closed per seed: s0 40 %, s1 55 %, s2 –"``
    (empty under 2 seeds; – where that seed's oracle is not ahead of its agnostic head)."""
    p = v.get("paired")
    if not p or p[2] < 2:
        return ""
    text = f"; {label} − agnostic on B per seed: {p[0]:+.1f} ± {p[1]:.1f} (n={p[2]})"
    shares = v.get("per_seed") or {}
    if len(shares) >= 2:
        text += "; closed per seed: " + ", ".join(f"s{k} " + ("–" if c is None else f"{round(c)} %")
                                                   for k, c in shares.items())
    return text


def failed_trainings(results: dict) -> list[dict]:
    """Runs whose segm AP on A is below ``FAILED_TRAINING_SHARE`` of the class-agnostic head's on the
    same split, seed, backbone and stage (set-A evidence only): ``[{run, split, A, agnostic_A}]``."""
    out = []
    for key, rec in sorted(results.items()):
        stage = rec.get("stage") or rec["config"]["stage"]
        if stage == "detector" or rec.get("preset") in ("agnostic", "agnostic_e2e"):
            continue
        ref_preset = "agnostic" if stage == "mask" else "agnostic_e2e"
        for split, m in rec["metrics"].items():
            ref = results.get(Run(ref_preset, split, rec["seed"], rec["backbone"]).key)
            a = m["A"].get("segm_AP")
            ref_a = ref["metrics"][split]["A"].get("segm_AP") if ref else None
            if a is not None and ref_a and a < FAILED_TRAINING_SHARE * ref_a:
                out.append({"run": key, "split": split, "A": a, "agnostic_A": ref_a})
    return out


def detector_box_ap(results: dict, scale: StudyScale, backbone: str = "main") -> dict:
    """Box AP of a backbone's Table-2 detectors (stage 1, where each end-to-end run starts), over
    seeds: {"voc": (mean, std, n), "nonvoc": ...} (None where no detector result is there yet)."""
    dets = list(dict.fromkeys(r.detector() for r in reported_runs("t2", scale, backbone)))
    # voc2nonvoc's set A is the voc classes, its set B the non-voc ones
    return {"voc": mean_std(_values(results, dets, "voc2nonvoc", "A", "bbox_AP")),
            "nonvoc": mean_std(_values(results, dets, "voc2nonvoc", "B", "bbox_AP"))}


def gate(results: dict, scale: StudyScale) -> Optional[dict]:
    """The data-design gate: stage-wise agnostic vs oracle, voc→non-voc, segm AP on B (first seed)."""
    det, agn, ora = table_runs("gate", scale)
    if agn.key not in results or ora.key not in results:
        return None
    a = results[agn.key]["metrics"]["voc2nonvoc"]["B"]["segm_AP"]
    o = results[ora.key]["metrics"]["voc2nonvoc"]["B"]["segm_AP"]
    iou = [results[r.key]["metrics"]["voc2nonvoc"].get("masks_on_gt_boxes") for r in (agn, ora)]
    return {"agnostic": a, "oracle": o, "gap": o - a, "passed": o - a >= GATE_MIN_GAP,
            "generator_version": results[ora.key].get("generator_version"),
            "box_AP_B": results.get(det.key, {}).get("metrics", {}).get("voc2nonvoc", {}).get("B", {}).get("bbox_AP"),
            "gt_box_iou_B": None if None in iou else (iou[0]["B"]["mean_iou"], iou[1]["B"]["mean_iou"])}


def earlier_gates(old: list[dict], scale: StudyScale) -> list[dict]:
    """Gate measurements among superseded results: an agnostic and an oracle result superseded at
    the same moment (built on the same detector), oldest first."""
    ora = table_runs("gate", scale)[2]
    by_stamp: dict[str, dict] = {}
    for r in old:
        by_stamp.setdefault(r["superseded"]["at"], {})[r["run"]] = r
    out = []
    for at, rs in sorted(by_stamp.items()):
        g = gate(rs, scale)  # None unless both runs were superseded then
        if g is not None:
            out.append({**g, "at": at, "reason": rs[ora.key]["superseded"]["reason"]})
    return out


def fig3_points(results: dict, scale: StudyScale) -> list[dict]:
    """Figure 3: per random split, average masks per A class and the relative AP gain on B of
    transfer over class-agnostic (percent)."""
    pts = []
    runs = table_runs("fig3", scale)
    for split in dict.fromkeys(r.split for r in runs):
        agn, tr = (results.get(next(r for r in runs if r.split == split and r.preset == p).key) for _, p in FIG3_ROWS)
        if agn is None or tr is None:
            continue
        a, t = agn["metrics"][split]["B"]["segm_AP"], tr["metrics"][split]["B"]["segm_AP"]
        pts.append({"split": split, "A_size": int(split[4:].split("_")[0]),
                    "masks_per_A_class": agn.get("train_masks_per_A_class"), "agnostic_B": a, "transfer_B": t,
                    "relative_gain_pct": 100 * (t - a) / a if a else None})
    return pts


def _paper(name: str, label: str, k: int) -> str:
    v = PAPER.get(name, {}).get(label)
    return "" if v is None or v[k] is None else f"{v[k]:.1f}"


def _md_table(name: str, results: dict, scale: StudyScale, backbone: str = "main") -> list[str]:
    lines = ["| method | " + " | ".join(f"{ARROW[d]}: AP on B | AP on A | paper B | paper A" for d in DIRECTIONS) + " |",
             "|---|" + "---:|" * 8]
    rows = table_rows(name, results, scale, backbone)
    for row in rows:
        cells = []
        for j, d in enumerate(DIRECTIONS):
            cells += [fmt(row[f"{d}_B"], True), fmt(row[f"{d}_A"]), _paper(name, row["label"], 2 * j),
                      _paper(name, row["label"], 2 * j + 1)]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    if any(row[f"{d}_gt_iou_{x}"] for row in rows for d in DIRECTIONS for x in "AB"):
        lines += ["", f"Detection taken out: mean mask IoU on the ground-truth boxes and classes of the first "
                  f"{STUDY_GT_BOX_IMAGES} val images (`maskx/gt_box_eval.py`), mean ± std over seeds:", "",
                  "| method | " + " | ".join(f"{ARROW[d]}: IoU on B | IoU on A" for d in DIRECTIONS) + " |",
                  "|---|" + "---:|" * 4]
        for row in rows:
            lines.append(f"| {row['label']} | " + " | ".join(
                fmt(row[f"{d}_gt_iou_{x}"], digits=2) for d in DIRECTIONS for x in "BA") + " |")
    return lines


def _raw_embedding_rows(superseded: list[dict]) -> list[str]:
    """Table 1a's superseded fixed-embedding runs whose rows were as the source gives them (``embedding_norm=0``)."""
    raw = [r for r in superseded if r["config"].get("transfer_input") in ("randn", "glove", "text")
           and r["config"].get("embedding_norm", 0.0) == 0.0 and r["superseded"]["reason"].startswith(
               "config differs in embedding_norm")]
    if not raw:
        return []
    lines = ["", "Superseded: the same fixed-embedding rows with rows as the source gives them (randn ~71.6, "
             "GloVe 2-7, text 1; `embedding_norm=0`). segm AP on A | B per run:", ""]
    for r in sorted(raw, key=lambda r: (r["config"]["transfer_input"], r["split"], r["seed"])):
        d = r["split"]
        m = r["metrics"][d]
        lines.append(f"- {r['config']['transfer_input']}, {ARROW.get(d, d)}, seed {r['seed']}: "
                     f"{m['A']['segm_AP']:.1f} | {m['B']['segm_AP']:.1f}")
    return lines


def _pct(x) -> str:  # a share (0.4) as '40 %'
    return "–" if x is None else f"{100 * x:.0f} %"


def _f(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


DIAGNOSTICS_DIR = "diagnostics"  # under the results folder: ``v<version>_s<seed>_<direction>.json`` per detector


def diagnostics_records(results_dir, version: str) -> list[dict]:
    """The study's diagnostics records of generator ``version`` (``results/diagnostics/v4_s0_voc2nonvoc.json``
    ...), by seed then direction; design records (other names) are left out."""
    out = []
    for p in sorted((Path(results_dir) / DIAGNOSTICS_DIR).glob(f"v{version}_s*_*.json")):
        r = json.loads(p.read_text())
        if str(r.get("generator_version")) == str(version):
            out.append(r)
    return sorted(out, key=lambda r: (r["seed"], DIRECTIONS.index(r["split"]) if r["split"] in DIRECTIONS else 9))


def diagnostics_table(records: list[dict]) -> str:
    """One markdown table per record: a row per embedding, then the heads' IoUs and T's spread."""
    parts = []
    for r in records:
        iou = r["iou_on_gt_boxes"]
        parts += [f"### World v{r['generator_version']}, {r['split']}, seed {r['seed']} "
                  f"({r['A_classes']} A of {r['classes']} classes; mask IoU on the ground-truth boxes of "
                  f"{r['images']} val images)", "",
                  "| embedding | ρ (cos vs shared attributes) | ρ centred | nearest A shares an attribute "
                  "(chance) | probe IoU on B | probe closes (agnostic → oracle) | probe closes (shared row → "
                  "oracle) | calibrated probe IoU on B | calibrated closes (agnostic → oracle) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for kind, e in r["embeddings"].items():
            if "error" in e:
                parts.append(f"| {kind} | {e['error']} | | | | | | | |")
                continue
            s, c, p = e["similarity"], e["similarity_centred"], e["probe"]
            cal = e.get("probe_calibrated", {})
            parts.append(f"| {kind} | {_f(s['rho'])} | {_f(c['rho'])} | {_f(s.get('nearest_a_shares'))} "
                         f"({_f(s.get('chance_shares'))}) | {_f(p['iou_B'], 3)} | {_pct(p['gap_closed_B'])} | "
                         f"{_pct(p.get('class_part_closed_B'))} | {_f(cal.get('iou_B'), 3)} | "
                         f"{_pct(cal.get('gap_closed_B'))} |")
        heads = " · ".join(f"{k} {_f(v['A'], 3)} / {_f(v['B'], 3)}" for k, v in iou.items())
        spread = " · ".join(f"{k} {_f(v['spread'])}" for k, v in r["spread"].items())
        parts += ["", f"Mask IoU on A / B: {heads}.", "",
                  f"Oracle − agnostic on B: {_f(r['oracle_minus_agnostic_B'], 3)}; oracle − agnostic trained "
                  f"with every mask (what knowing the class is worth): {_f(r.get('class_value_B'), 3)}. "
                  f"Spread of the mask weights (per-class deviation / mean-row norm): {spread}.", ""]
    return "\n".join(parts)


COUNTER_EXAMPLE_DIR = "v3"  # under the results folder: version 3's committed study, kept as it ran
SIDE_BY_SIDE_ROWS = (("t2", "class-agnostic, end-to-end", "agnostic_e2e"),
                     ("t2", "Mask^X R-CNN, end-to-end", "transfer_clsbox_2lrelu_mlp_e2e"),
                     ("t2", "oracle, end-to-end", "oracle_e2e"),
                     ("t1a", "class-agnostic, stage-wise", "agnostic"),
                     ("t1a", "transfer w/ randn, stage-wise", "transfer_randn_2lrelu"),
                     ("t1a", "transfer w/ cls+box, stage-wise", "transfer_clsbox_2lrelu"),
                     ("t1a", "oracle, stage-wise", "oracle"))


def _version(results: dict) -> str:
    versions = sorted({r.get("generator_version") for r in results.values() if r.get("generator_version") is not None})
    if versions:
        return "/".join(str(v) for v in versions)
    from maskx.data.embedded import GENERATOR_VERSION

    return str(GENERATOR_VERSION)  # no result yet: the version the study runs on


def side_by_side(worlds: list, scale: StudyScale) -> list[str]:
    """Markdown: AP on B of the headline methods, then per-class AP on B of B classes whose look set A
    covers and of the others (``coverage``), one column per world and direction. ``worlds``: [(label,
    results by run key)]."""
    cols = [(w, res, d) for w, res in worlds for d in DIRECTIONS]
    # each world's table rows (by preset) and gap shares, computed once for both its directions
    rows = {w: {t: {r["preset"]: r for r in table_rows(t, res, scale)} for t in {t for t, _, _ in SIDE_BY_SIDE_ROWS}}
            for w, res in worlds}
    shares = {w: gap_closed(res, scale) for w, res in worlds}
    head = "| | " + " | ".join(f"{w} {ARROW[d]}" for w, _, d in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)
    lines = ["Mask AP on B (mean ± std over seeds; main backbone):", "", head, rule]
    for table, label, preset in SIDE_BY_SIDE_ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(rows[w][table][preset][f"{d}_B"]) for w, _, d in cols) + " |")
    cells = []
    for w, _, d in cols:
        v = shares[w][d]
        cells.append("–" if v.get("closed_pct") is None else f"{round(v['closed_pct'])} %")
    lines += [f"| share of the gap Mask^X closes | " + " | ".join(cells) + " |", "",
              "Per-class AP on B (stage-wise, Table 1a), over the B classes whose family (version 3) or body "
              "(version 4) some A class has (covered) and over the others (unseen): where A never saw a look, "
              "transfer has nothing to carry.", "",
              "| method | " + " | ".join(f"{w} {ARROW[d]} covered | unseen" for w, _, d in cols) + " |",
              "|---|" + "---:|---:|" * len(cols)]
    cov = [coverage(res, scale, d) for _, res, d in cols]
    for label, _ in COVERAGE_ROWS:
        cells = []
        for c in cov:
            for group, n in zip(("covered", "unseen"), c[label]["classes"] or (None, None)):
                ms = c[label][group]
                cells.append(f"{fmt(ms)} ({n})" if ms else "no such class" if n == 0 else "pending")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "(In parentheses: the number of B classes in each group.)"]
    return lines


def write_report(results_dir="results", out="RESULTS.md", scale: str = "study") -> dict:
    """Render every table from ``results_dir`` into ``out`` (atomically); returns a summary."""
    from maskx.atomic import atomic_write

    sc = SCALES[scale]
    results = load_results(results_dir)
    g = gate(results, sc)
    lines = ["# Results of the ablation study", "",
             f"Generated by `python -m maskx study report` from `{results_dir}/` ({len(results)} runs); do not edit.",
             "Rerun missing runs with `python -m maskx study run` (resumable; `study plan` lists them).", "",
             "All numbers are mask (segm) AP on the embedded data's val split (500 images with every mask),",
             "mean ± std over seeds. Paper columns: ResNet-50-FPN on COCO (Tables 1-2), for the ordering only.", "",
             "## Headline: share of the agnostic→oracle gap on B closed by Mask^X (Table 2, end-to-end)", ""]
    for bb in ("main", "second"):
        name = sc.backbone if bb == "main" else sc.second_backbone
        gc = gap_closed(results, sc, bb)
        for d in DIRECTIONS:
            v = gc[d]
            if v.get("closed_pct") is not None:
                lines.append(f"- {name}, {ARROW[d]}: agnostic {v['agnostic']:.1f}, Mask^X {v['transfer']:.1f}, "
                             f"oracle {v['oracle']:.1f} AP on B: gap {v['gap']:.1f}, closed **{round(v['closed_pct'])} %** "
                             f"(paper: {PAPER_GAP_CLOSED[d]} %; expected on this world: ≥ {EXPECTED_GAP_CLOSED} %)"
                             + (f"; a gap under {MIN_MEANINGFUL_GAP:.0f} AP makes this share noise"
                                if v["gap"] < MIN_MEANINGFUL_GAP else "") + _paired(v, "Mask^X"))
            elif v.get("gap") is not None:
                lines.append(f"- {name}, {ARROW[d]}: agnostic {v['agnostic']:.1f}, Mask^X {v['transfer']:.1f}, "
                             f"oracle {v['oracle']:.1f} AP on B: the oracle is not ahead (gap {v['gap']:.1f}), "
                             "so no share can be stated" + _paired(v, "Mask^X"))
            else:
                lines.append(f"- {name}, {ARROW[d]}: pending")
        behind = {d: v["A"] for d, v in gc.items() if None not in v["A"].values()
                  and v["A"]["oracle"] < v["A"]["agnostic"]}
        if behind:
            lines.append(f"- {name}, end-to-end ({sc.e2e_iters} iterations from the detector): the oracle's AP on "
                         "set A is below the class-agnostic head's (" + "; ".join(
                             f"{ARROW[d]}: {a['oracle']:.1f} vs {a['agnostic']:.1f}" for d, a in behind.items())
                         + "). On classes where both have masks the oracle should not trail; its per-class mask "
                         "weights are further from converged than one shared head after this short training, which "
                         "shrinks the gap on B that the share above divides by.")
        box = detector_box_ap(results, sc, bb)
        if None not in box.values():
            seeds = " (1 seed)" if box["voc"][2] == 1 else ""
            lines.append(f"- {name}: its detectors (where each end-to-end run starts) have box AP "
                         f"{fmt(box['voc'], with_n=True)}{seeds} on the voc classes and {fmt(box['nonvoc'])} on "
                         "the non-voc ones, the ceiling under which these mask heads are compared.")
    sw = gap_closed(results, sc, "main", table="t1a", rows=("agnostic", "transfer_clsbox_2lrelu", "oracle"))
    if any(v.get("closed_pct") is not None for v in sw.values()):
        lines += ["", "The same share stage-wise (Table 1a: class-agnostic, transfer cls+box, oracle; "
                  f"{sc.mask_iters} mask-head iterations on the frozen detector):", ""]
        for d, v in sw.items():
            if v.get("closed_pct") is not None:
                lines.append(f"- {sc.backbone}, {ARROW[d]}: agnostic {v['agnostic']:.1f}, transfer {v['transfer']:.1f}, "
                             f"oracle {v['oracle']:.1f} AP on B (set A: {v['A']['agnostic']:.1f}, "
                             f"{v['A']['transfer']:.1f}, {v['A']['oracle']:.1f}): gap {v['gap']:.1f}, closed "
                             f"**{round(v['closed_pct'])} %**" + _paired(v, "transfer"))
    lines += ["", "## Gate: does the embedded data need class knowledge for masks?", ""]
    if g is None:
        lines.append("pending (stage-wise agnostic and oracle, voc→non-voc, first seed)")
    else:
        lines.append(f"Stage-wise, voc→non-voc, seed {sc.seeds[0]}, generator version {g['generator_version']}: "
                     f"class-agnostic {g['agnostic']:.1f}, oracle {g['oracle']:.1f} AP on B, gap {g['gap']:.1f} "
                     f"({'passes' if g['passed'] else 'FAILS'} the ≥ {GATE_MIN_GAP:.0f} AP gate).")
        if g["box_AP_B"] is not None:
            lines.append(f"The detector's box AP on B is {g['box_AP_B']:.1f}: no mask head can reach a higher segm AP.")
        if g["gt_box_iou_B"] is not None:
            lines.append("With detection taken out (each ground-truth box and class of the first "
                         f"{STUDY_GT_BOX_IMAGES} val images given to the mask branch; `maskx/gt_box_eval.py`), the mean "
                         f"mask IoU on B is {g['gt_box_iou_B'][0]:.2f} for the class-agnostic head and "
                         f"{g['gt_box_iou_B'][1]:.2f} for the oracle.")
    records = diagnostics_records(results_dir, _version(results))
    if records:
        lines += ["", "## Can transfer work here? The diagnostics of each seed's detector", "",
                  "`scripts/diagnostics.py` on each study detector and its stage-wise heads (issue 30's measures, "
                  "`maskx/diagnostics.py`): how alike the detection weights of classes that share attributes are (ρ), "
                  "how much of the agnostic → oracle gap a linear map from each embedding to the oracle's mask "
                  "weights closes (the probe: what a T could reach), what knowing the class is worth for a mask, "
                  "and T's spread.", "", diagnostics_table(records)]
    superseded = load_superseded(results_dir)
    gate_keys = {r.key for r in table_runs("gate", sc)[1:]}
    old = [r for r in superseded if r["run"] in gate_keys]
    frozen = [] if g is None or g["passed"] else \
        [e for e in earlier_gates(old, sc) if e["passed"] and e["generator_version"] == g["generator_version"]]
    if frozen:
        e = frozen[-1]
        lines += ["", f"The generator (version {e['generator_version']}) was frozen for the study when the gate passed: "
                  f"class-agnostic {e['agnostic']:.1f}, oracle {e['oracle']:.1f}, gap {e['gap']:.1f} on an earlier "
                  f"seed-{sc.seeds[0]} detector of the same recipe (superseded {e['at']}: {e['reason']}). "
                  f"On the current detector the gap is {g['gap']:.1f}: between two detectors of one recipe the gap "
                  f"moves by {abs(e['gap'] - g['gap']):.1f} AP, so this data sits at the gate's edge. The data was "
                  "not revised after the study began (revising it on the study's results would tune it on set B)."]
    if old:
        lines += ["", "Earlier gate measurements (superseded; kept in `results/superseded/`):", ""]
        for r in old:
            lines.append(f"- {r['run']}: segm AP on B {r['metrics']['voc2nonvoc']['B']['segm_AP']:.2f} "
                         f"(generator version {r.get('generator_version')}, mask_lr_mult "
                         f"{r['config'].get('mask_lr_mult', 1.0)}); superseded {r['superseded']['at']}: "
                         f"{r['superseded']['reason']}")
    failed = failed_trainings(results)
    if failed:
        lines += ["", f"## Runs that did not train (segm AP on A under {FAILED_TRAINING_SHARE:.0%} of the "
                  "class-agnostic head's, same split, seed and stage)", "",
                  "Set A has mask labels for every model, so these are failed trainings, not findings:", ""]
        lines += [f"- {f['run']} ({f['split']}): {f['A']:.1f} vs {f['agnostic_A']:.1f}" for f in failed]
    for name in ("t1a", "t1b", "t1c", "t1d"):
        lines += ["", f"## {TABLES[name].title}", "", *_md_table(name, results, sc)]
        if name == "t1a":
            lines += _raw_embedding_rows(superseded)
    for bb in ("main", "second"):
        bname = sc.backbone if bb == "main" else sc.second_backbone
        lines += ["", f"## {TABLES['t2'].title}: {bname}", "", *_md_table("t2", results, sc, bb), "",
                  "| method | " + " | ".join(f"{ARROW[d]} {s}" for d in DIRECTIONS for s in table2_stats(sc)) + " |",
                  "|---|" + "---:|" * (2 * len(table2_stats(sc)))]
        for row in table2_detail(results, sc, bb):
            lines.append(f"| {row['label']} | " + " | ".join(fmt(row[f"{d}_{s}"]) for d in DIRECTIONS
                                                            for s in table2_stats(sc)) + " |")
        if sc.eval_skip_absent_masks:
            lines += ["", "APs/m/l are not computed: evaluation skips the masks of detections whose class has no "
                      "ground truth in their image (false positives whatever their mask), which keeps AP, AP50 and AP75 exact."]
    lines += ["", f"## {TABLES['deep'].title}", "", *_md_table("deep", results, sc), "",
              "## Figure 3: random A/B splits (relative AP gain on B of transfer over class-agnostic)", "",
              "| split | masks per A class | agnostic B | transfer B | relative gain |", "|---|---:|---:|---:|---:|"]
    for p in fig3_points(results, sc):
        gain = "n/a" if p["relative_gain_pct"] is None else f"{p['relative_gain_pct']:+.0f} %"
        lines.append(f"| {p['split']} | {p['masks_per_A_class'] or 0:.0f} | {p['agnostic_B']:.1f} | "
                     f"{p['transfer_B']:.1f} | {gain} |")
    v3_dir = Path(results_dir) / COUNTER_EXAMPLE_DIR
    if v3_dir.is_dir():
        v3 = load_results(v3_dir)
        lines += ["", "## Version 3 beside this world: the counter-example", "",
                  f"The study on the families world (generator version 3) is kept as it ran in `{v3_dir}/` "
                  "(its report: `docs/results-v3.md`). There the detection weights reflected the family look, but "
                  "knowing the class was worth nothing for a mask: a class-agnostic head trained with every "
                  "class's masks matched the oracle on B (`docs/world-design.md`), so no transfer could help.", "",
                  *side_by_side([("v3", v3), (f"v{_version(results)}", results)], sc)]
    cost, seconds = cost_section(sc, results, superseded)
    lines += cost
    text = "\n".join(lines)
    atomic_write(Path(out), lambda tmp: Path(tmp).write_text(text))
    return {"out": str(out), "runs": len(results), "gate": g, "hours": round(seconds / 3600, 2)}
