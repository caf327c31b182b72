"""Mask grids: the same val instances segmented by each method of a table, side by side.

Each study result keeps the masks its mask branch draws on the ground-truth boxes and classes of the
first ``evaluation.MASK_GRID_IMAGES`` val images (``gt_box_masks``), so detection is out of the
picture and a fresh clone draws the grids without training. Rows are instances, columns methods;
set-A instances are drawn green, set-B red, each with its mask IoU.

Which instances (stated, never hand-picked): per direction, the set-B instances where the oracle's
and the class-agnostic head's IoU differ most (the instances where knowing the class matters), then
the set-A instance where they differ most, for reference; one seed (the first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from maskx_study.plan import ARROW, TABLES, StudyScale

GREEN, RED = (40, 190, 70), (230, 40, 40)
CELL = 112  # pixels per grid cell
# the pair whose disagreement picks the instances: a table's own agnostic and oracle rows where it has
# them (end-to-end tables), else the stage-wise pair of Table 1a
REFERENCE = (("agnostic_e2e", "oracle_e2e"), ("agnostic", "oracle"))


def _instances(record: Optional[dict]) -> dict:
    """A result's kept masks by instance: (image, category id, box) -> entry."""
    grid = (record or {}).get("gt_box_masks") or {}
    return {(x["image"], x["category_id"], tuple(x["box"])): x for x in grid.get("instances", [])}


def _result(results: dict, preset: str, direction: str, seed: int, backbone: str) -> Optional[dict]:
    from maskx.config import get_preset

    split = "all" if get_preset(preset).split == "all" else direction
    for key, rec in results.items():
        if (rec.get("preset"), rec.get("split"), rec.get("seed"), rec.get("backbone")) == (preset, split, seed, backbone):
            return rec
    return None


def pick_instances(results: dict, table: str, scale: StudyScale, direction: str, n_b: int = 5, n_a: int = 1,
                   seed: Optional[int] = None) -> list[tuple]:
    """The rule above: instance keys, set B first. ``results`` by run key (``load_results``)."""
    seed = scale.seeds[0] if seed is None else seed
    rows = {p for _, p in TABLES[table].rows} if table in TABLES else set()
    pair = next((p for p in REFERENCE if set(p) <= rows), REFERENCE[-1])
    recs = [_result(results, p, direction, seed, scale.backbone) for p in pair]
    agn, ora = (_instances(r) for r in recs)
    a_ids = set_a(recs + [rec for rec in results.values() if rec.get("split") == direction], direction)
    common = [k for k in ora if k in agn]
    diff = sorted(common, key=lambda k: (-abs(ora[k]["iou"] - agn[k]["iou"]), k))
    b = [k for k in diff if k[1] not in a_ids][:n_b]
    a = [k for k in diff if k[1] in a_ids][:n_a]
    return b + a


def set_a(records: list, direction: str) -> set:
    """Set A's category ids of ``direction`` as the first of ``records`` that was evaluated there records it."""
    for rec in records:
        split = ((rec or {}).get("metrics", {}).get(direction) or {}).get("split")
        if split:
            return set(split.get("A", []))
    return set()


def val_image(scale: StudyScale, index: int, version: int) -> np.ndarray:
    """Val image ``index`` (RGB uint8): the study's file when present, else drawn again (the val split
    is seed 1 of ``version``'s generator at 256 px)."""
    from PIL import Image

    from maskx.data.embedded import render
    from maskx.data.synthetic import as_stored

    path = Path(scale.data) / "val" / "images" / f"{index + 1:06d}.jpg"
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB"))
    return as_stored(render(1, index, 256, version)[0])


def mask_grid(results: dict, table: str, scale: StudyScale, direction: str, columns: Optional[list] = None,
              n_b: int = 5, n_a: int = 1, seed: Optional[int] = None, names: Optional[dict] = None):
    """A PIL image: rows = ``pick_instances``, columns = ``columns`` [(label, preset)] (default: the
    table's rows), each cell the instance's crop with the method's mask (green: set A, red: set B),
    its box and IoU. ``names``: category id -> class name for the row labels (default: the recorded
    generator version's)."""
    from PIL import Image, ImageDraw

    from maskx.gt_box_eval import decode_mask

    seed = scale.seeds[0] if seed is None else seed
    columns = list(columns or TABLES[table].rows)
    keys = pick_instances(results, table, scale, direction, n_b, n_a, seed)
    recs = [_result(results, p, direction, seed, scale.backbone) for _, p in columns]
    masks = [_instances(r) for r in recs]
    ref = next((r for r in recs if r), {}) or {}
    version = ref.get("generator_version", 3)
    if names is None:
        from maskx.data.embedded import WORLDS, categories

        names = {c["id"]: c["name"] for c in categories(version)} if version in WORLDS else {}
    a_ids = set_a(recs + [rec for rec in results.values() if rec.get("split") == direction], direction)
    label_w, head_h = 150, 34
    canvas = Image.new("RGB", (label_w + CELL * len(columns), head_h + CELL * max(1, len(keys))), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (label, _) in enumerate(columns):
        draw.multiline_text((label_w + j * CELL + 3, 2), _wrap(label, 18), fill="black")
    if not keys:
        where = ARROW.get(direction, direction).replace("→", " to ")  # PIL's default font has no arrow
        draw.text((4, head_h + 4), f"no kept masks for {where} (rerun the study's evaluation)", fill="black")
    images: dict = {}
    for i, key in enumerate(keys):
        image, cid, box = key
        if image not in images:
            images[image] = val_image(scale, image, version)
        colour = GREEN if cid in a_ids else RED
        name = (names or {}).get(cid, f"class {cid}")
        draw.multiline_text((3, head_h + i * CELL + 4), _wrap(f"{'A' if cid in a_ids else 'B'}: {name}\nimage {image + 1}", 22),
                            fill=colour)
        for j, m in enumerate(masks):
            entry = m.get(key)
            cell = _cell(images[image], box, None if entry is None else decode_mask(entry["mask"]), colour)
            canvas.paste(cell, (label_w + j * CELL, head_h + i * CELL))
            text = "n/a" if entry is None else f"IoU {entry['iou']:.2f}"
            draw.rectangle([label_w + j * CELL + 2, head_h + (i + 1) * CELL - 14, label_w + j * CELL + 62,
                            head_h + (i + 1) * CELL - 2], fill="white")
            draw.text((label_w + j * CELL + 4, head_h + (i + 1) * CELL - 14), text, fill="black")
    return canvas


def _wrap(text: str, width: int) -> str:
    out, line = [], ""
    for word in text.replace("\n", " \n ").split(" "):
        if word == "\n":
            out.append(line.strip())
            line = ""
        elif len(line) + len(word) + 1 > width and line:
            out.append(line.strip())
            line = word + " "
        else:
            line += word + " "
    return "\n".join([*out, line.strip()])


def paste_box_mask(mask: np.ndarray, box, shape: tuple[int, int]) -> np.ndarray:
    """A box's square bool mask [M, M] (a kept ``gt_box_masks`` mask, decoded) resized onto ``box``
    (x0, y0, x1, y1 image pixels; bilinear, kept where at least half on): bool [H, W] of ``shape``; the
    part of the box outside the image is dropped."""
    from PIL import Image

    h, w = shape
    x0, y0, x1, y1 = box
    bw, bh = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((bw, bh), Image.BILINEAR)) >= 128
    bx0, by0 = int(round(x0)), int(round(y0))
    ty, tx = min(h, max(0, by0)), min(w, max(0, bx0))  # the box's top left clipped to the image
    ys, xs = slice(ty, max(ty, min(h, by0 + bh))), slice(tx, max(tx, min(w, bx0 + bw)))
    full = np.zeros((h, w), bool)
    full[ys, xs] = m[ys.start - by0:ys.stop - by0, xs.start - bx0:xs.stop - bx0]
    return full


def _cell(image: np.ndarray, box, mask: Optional[np.ndarray], colour) -> "Image.Image":
    """The box's surroundings (the box plus a quarter of its size each side), the mask pasted into the
    box and tinted, the box outlined; resized to CELL x CELL."""
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    pad = 0.25 * max(x1 - x0, y1 - y0)
    cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    cx1, cy1 = min(w, int(np.ceil(x1 + pad))), min(h, int(np.ceil(y1 + pad)))
    crop = image[cy0:cy1, cx0:cx1].astype(np.float32)
    if mask is not None:
        sub = paste_box_mask(mask, box, (h, w))[cy0:cy1, cx0:cx1]
        crop[sub] = 0.45 * crop[sub] + 0.55 * np.array(colour, np.float32)
    cell = Image.fromarray(crop.clip(0, 255).astype(np.uint8))
    scale = CELL / max(cell.width, cell.height)
    cell = cell.resize((max(1, round(cell.width * scale)), max(1, round(cell.height * scale))), Image.BILINEAR)
    out = Image.new("RGB", (CELL, CELL), "white")
    out.paste(cell, (0, 0))
    ImageDraw.Draw(out).rectangle([(x0 - cx0) * scale, (y0 - cy0) * scale, (x1 - cx0) * scale - 1,
                                   (y1 - cy0) * scale - 1], outline=colour)
    return out


def table_grids(results: dict, table: str, scale: StudyScale, names: Optional[dict] = None, **kw) -> list:
    """One ``mask_grid`` per direction: [(direction, image)]."""
    from maskx_study.plan import DIRECTIONS

    return [(d, mask_grid(results, table, scale, d, names=names, **kw)) for d in DIRECTIONS]

