"""The views of notebooks/6_embedding_inputs.ipynb: which inputs of T look like an appearance embedding.

Everything is read from files written ahead, so a fresh clone draws it in seconds:

- a transfer-diagnostics record (``results/diagnostics/*.json``, ``scripts/diagnostics.py``): its
  table (similarity index, linear probe, what knowing the class is worth, T's spread) and its views
  (``maskx.diagnostics.embedding_views``: a UMAP layout of the classes per embedding, each set-B
  class's nearest set-A classes, the class list with attributes; a record made before the views
  gets them with ``scripts/diagnostics.py --embeddings-only``);
- the study's results of Table 1a (``gt_box_masks``): the masks T draws from each input on the same
  set-B instances (``maskx_study.grids``).

Which record (stated, never hand-picked), for a direction and seed: the study's per-seed record of
the newest world, ``v<N>_s<seed>_<direction>.json`` with N >= 4 in ``<results_dir>/diagnostics``;
else the design record the frozen world passed its gate on (``GATE_RECORD`` in the committed
``results/diagnostics``, docs/world-design.md); without it, the last design record by name.

Which set-B classes get their nearest A classes listed: those with the largest oracle − class-agnostic
gap in per-class mask IoU on ground-truth boxes (the record's ``per_class_iou_on_gt_boxes``; ties by
class id): where knowing the class matters most for the mask. A record without per-class IoU: the
first B classes by id, and the rule says so.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from maskx_study.plan import ARROW, StudyScale

KINDS = ("randn", "glove", "text", "cls", "box", "cls+box")  # the inputs of T, in Table 1a's order
REFERENCE = "attributes"  # one-hot attribute rows: what an ideal appearance embedding would reflect
LABELS = {"randn": "randn", "glove": "GloVe", "text": "text (MiniLM)", "cls": "w_cls", "box": "w_box",
          "cls+box": "w_cls+box", REFERENCE: "attributes (reference)"}
# the mask grid's columns: T with each input, then the two bounds (Table 1a's presets)
GRID_COLUMNS = (("T(randn)", "transfer_randn_2lrelu"), ("T(GloVe)", "transfer_glove_2lrelu"),
                ("T(text)", "transfer_text_2lrelu"), ("T(cls)", "transfer_cls_2lrelu"),
                ("T(box)", "transfer_box_2lrelu"), ("T(cls+box)", "transfer_clsbox_2lrelu"),
                ("class-agnostic", "agnostic"), ("oracle", "oracle"))
STUDY_RECORD = re.compile(r"v(\d+)_s(\d+)_(\w+)\.json")  # the study's per-seed records (as version 3's)
MIN_STUDY_VERSION = 4
COMMITTED = Path(__file__).resolve().parents[1] / "results" / "diagnostics"  # the design records
GATE_RECORD = "design_v4b_det4500_rand20_t0_splitseed4242.json"  # world version 4's gate (docs/world-design.md)
VIEW_KEYS = ("class_list", "nearest_A", "projection")
GREEN, RED = "rgb(40,190,70)", "rgb(230,40,40)"  # set A, set B (as the mask grids)
# one marker symbol per body (attribute worlds: a symbol like the silhouette) or family (version 3),
# while there are no more groups than symbols; other names take the free symbols in order
BODY_SYMBOLS = {"disc": "circle", "square": "square", "triangle": "triangle-up", "star": "star", "cross": "cross",
                "arrow": "arrow-right", "ring": "hexagon", "bar": "diamond-wide", "crescent": "triangle-left",
                "ell": "pentagon"}
SYMBOLS = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down", "star", "hexagon",
           "pentagon", "arrow-right", "triangle-left", "diamond-wide", "hourglass")


def results_folder(results_dir, scale: str) -> Path:
    """The results folder ``runner.rerun_or_load`` reads: ``results_dir`` (default: the scale's)
    relative to the repository found from the current folder."""
    from maskx_study.results import default_results_dir

    root = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "maskx").is_dir()), Path.cwd())
    return root / (results_dir or default_results_dir(scale))


def find_record(results_dir, direction: str, seed: int, diagnostics_file=None,
                committed: Path = COMMITTED) -> tuple[Optional[Path], str]:
    """The record to show and why (the module's rule): (path, reason) or (None, what is missing).
    ``diagnostics_file``: a path, or a name under ``<results_dir>/diagnostics`` or ``committed``."""
    own = Path(results_dir) / "diagnostics"
    if diagnostics_file:
        for p in (Path(diagnostics_file), own / str(diagnostics_file), Path(committed) / str(diagnostics_file)):
            if p.is_file():
                return p, "the record asked for (diagnostics_file)"
        return None, f"no diagnostics record {diagnostics_file!r} (looked in {own} and {committed})"
    study = []
    for p in own.glob("v*_s*_*.json") if own.is_dir() else []:
        m = STUDY_RECORD.fullmatch(p.name)
        if m and int(m[1]) >= MIN_STUDY_VERSION and int(m[2]) == seed and m[3] == direction:
            study.append((int(m[1]), p))
    if study:
        version, path = max(study)
        return path, f"the study's record of world v{version}, seed {seed}, {ARROW.get(direction, direction)}"
    design = sorted(Path(committed).glob("design_*.json")) if Path(committed).is_dir() else []
    if design:
        gate = Path(committed) / GATE_RECORD
        chosen, how = (gate, "the record world v4 passed its design gate on") if gate in design else \
            (design[-1], f"the last of {len(design)} design records by name")
        return chosen, (f"no study record v{MIN_STUDY_VERSION}+ for seed {seed}, {ARROW.get(direction, direction)} "
                        f"in {own}: {how}, measured on a design split and design data, not the study's")
    return None, f"no diagnostics record: neither a study record in {own} nor a design record in {committed}"


def load_record(path: Optional[Path]) -> Optional[dict]:
    return json.loads(Path(path).read_text()) if path is not None else None


def missing_views(record: Optional[dict], path: Optional[Path]) -> str:
    """Why the views cannot be drawn from ``record`` ("" when they can)."""
    if record is None:
        return "no diagnostics record to show (see above)"
    absent = [k for k in VIEW_KEYS if k not in record]
    if absent:
        return (f"{path} was written before the embedding views ({', '.join(absent)} missing): add them with "
                f"`python scripts/diagnostics.py --embeddings-only --out {path}` (class weights only, seconds)")
    return ""


def describe(record: Optional[dict], path: Optional[Path], why: str) -> str:
    if record is None:
        return why
    box = record.get("detector_box_ap") or {}
    return (f"showing {path} ({why}): world v{record.get('generator_version')}, split {record.get('split')} "
            f"(split seed {record.get('split_seed', record.get('seed'))}), {record.get('A_classes')} A of "
            f"{record.get('classes')} classes, detector box AP {box.get('all', '–')}; mask IoU on the ground-truth "
            f"boxes of {record.get('images')} val images")


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def summary_table(record: Optional[dict]) -> str:
    """The diagnostics of ``record`` as one markdown table (a row per input of T and the attributes'
    reference), then (c) what knowing the class is worth, (d) T's spread and the heads' IoUs."""
    if record is None:
        return "no diagnostics record to show"
    emb = record.get("embeddings", {})
    lines = ["| input of T | (a) ρ: cos vs shared attributes | ρ, centred rows | nearest A shares an attribute "
             "(chance) | (b) probe closes | calibrated probe closes |", "|---|---|---|---|---|---|"]
    for kind in (*KINDS, REFERENCE):
        e = emb.get(kind)
        if e is None or "error" in e:
            lines.append(f"| {LABELS[kind]} | {'not measured' if e is None else e['error']} | | | | |")
            continue
        s, c = e.get("similarity", {}), e.get("similarity_centred", {})
        lines.append(f"| {LABELS[kind]} | {_f(s.get('rho'))} | {_f(c.get('rho'))} | {_f(c.get('nearest_a_shares'))} "
                     f"({_f(c.get('chance_shares'))}) | {_pct(e.get('probe', {}).get('gap_closed_B'))} | "
                     f"{_pct(e.get('probe_calibrated', {}).get('gap_closed_B'))} |")
    iou = record.get("iou_on_gt_boxes", {})
    spread = record.get("spread", {})
    heads = {"agnostic": "class-agnostic", "transfer": "T(cls+box)", "oracle": "oracle",
             "agnostic_all": "class-agnostic with every class's masks"}
    lines += ["", f"(c) what knowing the class is worth (oracle − class-agnostic trained with every class's masks, "
              f"mask IoU on B): **{_f(record.get('class_value_B'), 3)}**. (d) spread of the mask weights (per-class "
              f"deviation / mean-row norm; 0 is a class-agnostic head): "
              + ", ".join(f"{'T(cls+box)' if k == 'transfer' else k} **{_f(v.get('spread'))}**" for k, v in spread.items())
              + ". Mask IoU on B: " + ", ".join(f"{heads.get(k, k)} {_f(v.get('B'), 3)}" for k, v in iou.items()
                                                 if k in heads) + "."]
    return "\n".join(lines)


def _classes(record: dict) -> dict:
    return {c["id"]: c for c in record["class_list"]}


def _group(attrs: list) -> str:
    """A class's body (attribute worlds) or family (version 3): what its symbol shows."""
    return next((a.split(":", 1)[1] for a in attrs if a.startswith("body:")),
                next((a.split(":", 1)[1] for a in attrs if a.startswith("family:")), ""))


def chosen_b_classes(record: Optional[dict], n: int = 4) -> tuple[list[int], str]:
    """The module's rule: (set-B category ids, the rule in words with the gaps)."""
    if record is None or "class_list" not in record:
        return [], "no class list in the record"
    b = [c["id"] for c in record["class_list"] if c["set"] == "B"]
    per = record.get("per_class_iou_on_gt_boxes") or {}
    ora, agn = per.get("oracle") or {}, per.get("agnostic") or {}
    gaps = {c: ora[str(c)] - agn[str(c)] for c in b
            if ora.get(str(c)) is not None and agn.get(str(c)) is not None}
    if gaps:
        ids = sorted(gaps, key=lambda c: (-gaps[c], c))[:n]
        return ids, (f"the {len(ids)} set-B classes with the largest oracle − class-agnostic gap in per-class mask "
                     f"IoU on ground-truth boxes ({len(gaps)} B classes have instances in the record's "
                     f"{record.get('images')} val images): " + ", ".join(f"{_classes(record)[c]['name']} "
                                                                        f"{gaps[c]:+.2f}" for c in ids))
    ids = b[:n]
    return ids, (f"the first {len(ids)} set-B classes by id (this record has no per-class IoU; "
                 "`scripts/diagnostics.py --embeddings-only --per-class-iou` adds it)")


def nearest_table(record: dict, b_id: int, k: int = 3) -> str:
    """Markdown: set-B class ``b_id``'s ``k`` nearest set-A classes in each embedding (cosine of centred
    rows), each with the attributes it shares with ``b_id``."""
    cls = _classes(record)
    me = cls[b_id]
    own = set(me["attributes"])
    per = record.get("per_class_iou_on_gt_boxes") or {}
    iou = ", ".join(f"{name} {per[h][str(b_id)]:.2f}" for h, name in (("agnostic", "class-agnostic"),
                    ("transfer", "T(cls+box)"), ("oracle", "oracle")) if per.get(h, {}).get(str(b_id)) is not None)
    lines = [f"**B: {me['name']}** (" + ", ".join(a.replace(":", " ") for a in me["attributes"]) + ")"
             + (f"; mask IoU on its ground-truth boxes: {iou}" if iou else ""), "",
             "| input of T | " + " | ".join(f"nearest A #{j + 1} (cosine; shares)" for j in range(k)) + " |",
             "|---|" + "---|" * k]
    for kind in (*KINDS, REFERENCE):
        near = record["nearest_A"].get(kind, {}).get(str(b_id))
        if near is None:
            lines.append(f"| {LABELS[kind]} | {record.get('view_errors', {}).get(kind, 'not computed')} |" + " |" * (k - 1))
            continue
        cells = []
        for a_id, cos in near[:k]:
            shared = [a.split(":", 1)[1] for a in cls[a_id]["attributes"] if a in own]
            cells.append(f"{cls[a_id]['name']} ({cos:.2f}; {', '.join(shared) if shared else '**nothing**'})")
        lines.append(f"| {LABELS[kind]} | " + " | ".join(cells + [""] * (k - len(cells))) + " |")
    return "\n".join(lines)


def umap_figure(record: Optional[dict], highlight=()):
    """Small multiples: one UMAP panel per input of T and the attributes' reference, set A green, set
    B red, one symbol per body (or family), the ``highlight`` B classes named. None without views."""
    if record is None or "projection" not in record or "class_list" not in record:
        return None
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = [k for k in (*KINDS, REFERENCE) if k in record["projection"]]
    classes = record["class_list"]
    symbol = _symbols(sorted({_group(c["attributes"]) for c in classes}))
    cols = 4
    rows_n = -(-len(kinds) // cols)
    fig = make_subplots(rows=rows_n, cols=cols, subplot_titles=[LABELS[k] for k in kinds],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    highlight = set(highlight)
    for i, kind in enumerate(kinds):
        xy = record["projection"][kind]
        for set_name, colour in (("A", GREEN), ("B", RED)):
            rows = [j for j, c in enumerate(classes) if c["set"] == set_name]
            big = [classes[j]["id"] in highlight for j in rows]
            fig.add_trace(go.Scatter(
                x=[xy[j][0] for j in rows], y=[xy[j][1] for j in rows], mode="markers+text", showlegend=False,
                text=[classes[j]["name"] if b else "" for j, b in zip(rows, big)], textposition="top center",
                textfont=dict(size=9), hovertext=[f"{classes[j]['name']} (set {set_name})" for j in rows],
                hoverinfo="text", marker=dict(color=colour, size=[12 if b else 7 for b in big],
                                              symbol=[symbol[_group(classes[j]["attributes"])] for j in rows],
                                              line=dict(width=[1.5 if b else 0 for b in big], color="black"))),
                row=i // cols + 1, col=i % cols + 1)
    # the legend: the two sets' colours, then the symbols (no data: the panels carry the points)
    for name, colour in (("set A (masks in training)", GREEN), ("set B (boxes only)", RED)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, marker=dict(color=colour, size=9)))
    if len(set(symbol.values())) > 1:
        for group, sym in symbol.items():
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=group,
                                     marker=dict(color="grey", size=8, symbol=sym)))
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    fig.update_layout(height=320 * rows_n + 80, width=1100, title_font_size=13, legend=dict(orientation="h", y=-0.04),
                      title="The classes in each input of T: UMAP of the rows centred on their mean (cosine, one "
                            "random_state for every panel)<br>named: the set-B classes of the next part")
    return fig


def _symbols(groups: list) -> dict:
    """{group: marker symbol}: ``BODY_SYMBOLS`` where named there, else the next free symbol; one
    symbol ("circle") for all when there are more groups than symbols."""
    if len(groups) > len(SYMBOLS):
        return {g: "circle" for g in groups}
    free = [s for s in SYMBOLS if s not in {BODY_SYMBOLS.get(g) for g in groups}]
    return {g: BODY_SYMBOLS.get(g) or free.pop(0) for g in groups}


def grid_note(results: dict, scale: StudyScale, direction: str, seed: int) -> str:
    """What the mask grid below shows, or why its rows are missing."""
    from maskx_study.grids import _result

    recs = {label: _result(results, preset, direction, seed, scale.backbone) for label, preset in GRID_COLUMNS}
    have = [label for label, r in recs.items() if r is not None and (r.get("gt_box_masks") or {}).get("instances")]
    if not any(r is not None for r in recs.values()):
        return (f"no Table 1a results for {ARROW.get(direction, direction)}, seed {seed} in this results folder: "
                "rerun the study (`python -m maskx study run`, or this notebook with mode='train')")
    if not have:
        return (f"no kept masks in the Table 1a results for {ARROW.get(direction, direction)}, seed {seed} (they were "
                "evaluated before results kept `gt_box_masks`): rerun the study's evaluation to draw this grid")
    missing = [label for label in recs if label not in have]
    return (f"Table 1a, {ARROW.get(direction, direction)}, seed {seed}: masks kept by {len(have)} of {len(recs)} columns"
            + (f" (n/a: {', '.join(missing)})" if missing else ""))


def input_grid(results: dict, scale: StudyScale, direction: str, seed: int):
    """The mask grid (``grids.mask_grid``): rows = the set-B instances where the oracle and the
    class-agnostic head differ most (then one set-A instance), columns = ``GRID_COLUMNS``."""
    from maskx_study.grids import mask_grid

    return mask_grid(results, "t1a", scale, direction, columns=list(GRID_COLUMNS), seed=seed)
