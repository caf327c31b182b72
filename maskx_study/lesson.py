"""The fifteen-minute lesson (``notebooks/0_paper_in_15_minutes.ipynb``): the paper's claim on a small
embedded world trained live in class. The runs are the study's (scale ``"lesson"``, table ``"lesson"``:
the class-agnostic head, Mask^X and the oracle, stage-wise, voc→non-voc, one seed); this module only
reads the data and the results and says what they show: what the models are given in training, a
table of AP on A and B, and one sentence on the gap Mask^X closes. No training, no model code.
"""
from __future__ import annotations

from pathlib import Path

from maskx_study.plan import ARROW, TABLES, Run, StudyScale

TABLE = "lesson"
DIRECTION = TABLES[TABLE].directions[0]  # voc→non-voc: set A = the 20 voc-like classes, set B = the other 60
MAGNIFY = 2  # the lesson's 128-px images drawn at twice their size


def ensure_data(scale: StudyScale, generate: bool = True) -> bool:
    """Whether the scale's embedded data is there; with ``generate``, it is generated when missing or
    drawn by another generator version (``maskx.data.embedded.ensure_dataset``: seconds at this size)."""
    from maskx.data.embedded import ensure_dataset

    if generate:
        ensure_dataset(scale.data, scale.data_size, workers=1, progress=False)  # one process: seconds at this size
    return all((Path(scale.data) / part / "annotations.json").is_file() for part in ("train", "val"))


def _train_data(scale: StudyScale, direction: str) -> tuple[dict, set]:
    from maskx.data.coco import read_json
    from maskx.data.splits import info_split_args, resolve_split

    data = read_json(Path(scale.data) / "train" / "annotations.json")
    split = resolve_split(direction, data["categories"], seed=scale.seeds[0], **info_split_args(data.get("info")))
    return data, set(split.a_ids)


def split_summary(scale: StudyScale, direction: str = DIRECTION) -> dict:
    """What partial supervision gives the models on the train split: classes in A and in B, and their
    training instances (set A's with a mask and a box, set B's with a box only)."""
    data, a_ids = _train_data(scale, direction)
    cats = [c["id"] for c in data["categories"]]
    n_a = sum(a["category_id"] in a_ids for a in data["annotations"])
    return {"direction": direction, "classes_A": sum(c in a_ids for c in cats),
            "classes_B": sum(c not in a_ids for c in cats),
            "train_images": len(data["images"]), "instances_A_with_masks": n_a,
            "instances_B_boxes_only": len(data["annotations"]) - n_a,
            "generator_version": (data.get("info") or {}).get("generator_version")}


def training_view(scale: StudyScale, direction: str = DIRECTION, n: int = 4):
    """A PIL image of ``n`` train images as the models see them in training: set-A objects with their
    mask (green fill, outlined) and box, set-B objects with their box only (red). Which images (stated, not
    hand-picked): the first train images that hold at least one instance of each set."""
    import numpy as np
    from PIL import Image, ImageDraw

    from maskx.evaluate import decode_mask
    from maskx_study.grids import GREEN, RED

    data, a_ids = _train_data(scale, direction)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    chosen = [im for im in sorted(data["images"], key=lambda im: im["id"])
              if {a["category_id"] in a_ids for a in by_image.get(im["id"], [])} == {True, False}][:n]
    panels = []
    for im in chosen:
        path = Path(scale.data) / "train" / "images" / im["file_name"]
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32)
        anns = by_image[im["id"]]
        for a in anns:
            if a["category_id"] in a_ids:
                m = decode_mask(a["segmentation"])
                pixels[m] = 0.4 * pixels[m] + 0.6 * np.array(GREEN, np.float32)
                inner = m.copy()  # the mask's outline, so a fill is told from a green-looking object
                inner[1:] &= m[:-1]
                inner[:-1] &= m[1:]
                inner[:, 1:] &= m[:, :-1]
                inner[:, :-1] &= m[:, 1:]
                pixels[m & ~inner] = np.array(GREEN, np.float32) * 0.5
        panel = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        panel = panel.resize((panel.width * MAGNIFY, panel.height * MAGNIFY), Image.NEAREST)
        draw = ImageDraw.Draw(panel)
        for a in anns:
            colour = GREEN if a["category_id"] in a_ids else RED
            x, y, w, h = (v * MAGNIFY for v in a["bbox"])
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
            label = f"{'A' if a['category_id'] in a_ids else 'B'}: {names.get(a['category_id'], a['category_id'])}"
            ty = max(0.0, y - 11)
            draw.rectangle([x, ty, x + draw.textlength(label) + 2, ty + 11], fill=colour)
            draw.text((x + 1, ty), label, fill=(255, 255, 255))
        panels.append(panel)
    gap = 6
    width = sum(p.width for p in panels) + gap * max(0, len(panels) - 1)
    canvas = Image.new("RGB", (max(1, width), max([p.height for p in panels], default=1)), "white")
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return canvas


def table_text(results: dict, scale: StudyScale, direction: str = DIRECTION) -> str:
    """The lesson's numbers, one line per method: mask AP on set A and on set B (COCO AP, 0-100) and,
    with detection taken out (each ground-truth box and class given), the mean mask IoU on A and on B;
    then the detector's box AP on A and B, where its result is there."""
    from maskx_study.report import fmt, table_rows

    det = results.get(Run("detector", "all", scale.seeds[0], scale.backbone).key)
    box = {s: ((det or {}).get("metrics", {}).get(direction) or {}).get(s, {}).get("bbox_AP") for s in ("A", "B")}
    lines = [f"{'method':<30} {'AP on A':>8} {'AP on B':>8}   {'IoU on A':>8} {'IoU on B':>8}   ({ARROW[direction]})"]
    for row in table_rows(TABLE, results, scale):
        lines.append(f"{row['label']:<30} {fmt(row[f'{direction}_A']):>8} {fmt(row[f'{direction}_B']):>8}   "
                     f"{fmt(row[f'{direction}_gt_iou_A'], digits=2):>8} "
                     f"{fmt(row[f'{direction}_gt_iou_B'], digits=2):>8}")
    if None not in box.values():  # every mask AP above is bounded by it: a mask needs a detection first
        lines.append(f"{'detector (boxes, every class)':<30} {box['A']:>8.1f} {box['B']:>8.1f}   "
                     "box AP: the ceiling of the mask APs")
    return "\n".join(lines)


def verdict(results: dict, scale: StudyScale, direction: str = DIRECTION) -> str:
    """One sentence on set B: the agnostic→oracle gap and the share of it Mask^X closed, or why no
    share can be read from this run."""
    from maskx_study.report import MIN_MEANINGFUL_GAP, PAPER_GAP_CLOSED, gap_closed

    v = gap_closed(results, scale, table=TABLE, rows=tuple(p for _, p in TABLES[TABLE].rows))[direction]
    if v.get("agnostic") is None or v.get("transfer") is None or v.get("oracle") is None:
        return "Not every run has a result yet: run the notebook with mode = \"train\"."
    head = (f"AP on set B: class-agnostic {v['agnostic']:.1f}, Mask^X {v['transfer']:.1f}, oracle {v['oracle']:.1f}. ")
    if v["gap"] < MIN_MEANINGFUL_GAP:
        return head + (f"The oracle leads the class-agnostic head by {v['gap']:.1f} AP, "
                       f"under {MIN_MEANINGFUL_GAP:.0f}: "
                       "no share of a gap can be read from this run (here, knowing the class did not visibly help).")
    return head + (f"The oracle, trained with set B's masks, leads the class-agnostic head by {v['gap']:.1f} AP; "
                   f"Mask^X, which never saw a set-B mask, closed {v['closed_pct']:.0f} % of that gap "
                   f"(the paper, Table 2: {PAPER_GAP_CLOSED[direction]} %).")

