"""What the Compare page (app/pages/compare.py) shows, apart from Streamlit: the study's class-agnostic
head, Mask^X R-CNN and oracle (Table 2's end-to-end rows) on one direction and seed; their masks on one
val image, either the predictions each result keeps (``examples``) or the masks each drew on the
ground-truth boxes and classes (``gt_box_masks``); each mask's IoU with the ground truth; per set-B
class what transfer gained; and the sentence that says what the numbers mean.

Inputs are result records as ``maskx_study.runner`` writes them (``<results>/<run key>.json``); the
folder is the caller's, so the current study's results and an older world's (e.g. ``results/v3/``)
are read alike.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from maskx_study.plan import DIRECTIONS, SCALES, Run
from maskx_study.report import MIN_MEANINGFUL_GAP
from maskx_study.results import EXAMPLE_IMAGES, EXAMPLE_MIN_SCORE

# the page's columns, (label, preset): Table 2's class-agnostic, Mask^X R-CNN and oracle rows
MODELS = (("class-agnostic", "agnostic_e2e"), ("Mask^X R-CNN", "transfer_clsbox_2lrelu_mlp_e2e"),
          ("oracle", "oracle_e2e"))
AGNOSTIC, TRANSFER, ORACLE = (p for _, p in MODELS)
# a drawn instance and a ground-truth instance of its class are one object at this box IoU (COCO's AP50 rule)
MATCH_BOX_IOU = 0.5
VAL_SEED = 1  # the embedded val split's seed (``maskx.data.embedded.ensure_dataset``)
UNVERSIONED = 3  # the generator version of results written before versions were recorded


@dataclass
class Instance:
    """One mask on the image: a model's or the ground truth's."""
    category_id: int
    box: list  # xyxy, image pixels
    mask: np.ndarray  # bool [H, W]
    score: Optional[float]  # None: ground truth, or a mask drawn on a ground-truth box
    iou: Optional[float] = None  # mask IoU with the matched ground-truth instance (None: none matched)


# ---------------------------------------------------------------- which results

def study_runs(direction: str, seed: int, backbone: Optional[str] = None) -> list[tuple[str, Run]]:
    """The page's three runs of ``direction`` and ``seed``: [(label, Run)] (the oracle's split is 'all')."""
    from maskx.config import get_preset

    bb = backbone or SCALES["study"].backbone
    return [(label, Run(p, "all" if get_preset(p).split == "all" else direction, seed, bb)) for label, p in MODELS]


def _run_file_seeds(folder: Path, preset: str, split: str, backbone: str) -> set:
    pattern = re.compile(rf"{re.escape(backbone)}__{re.escape(preset)}__{re.escape(split)}__s(\d+)\.json")
    return {int(m.group(1)) for p in folder.glob(f"{backbone}__{preset}__{split}__s*.json")
            if (m := pattern.fullmatch(p.name))}


def seeds_in(folder: Path, direction: str, backbone: Optional[str] = None) -> list[int]:
    """Seeds for which ``folder`` holds a result of at least one of the page's runs of ``direction``
    (the study scale's first seed when it holds none)."""
    runs = study_runs(direction, 0, backbone)
    seeds = set().union(*(_run_file_seeds(folder, r.preset, r.split, r.backbone) for _, r in runs))
    return sorted(seeds) or [SCALES["study"].seeds[0]]


def complete(folder: Path, backbone: Optional[str] = None) -> bool:
    """Whether ``folder`` holds all of the page's runs of one seed at least, in every direction."""
    for d in DIRECTIONS:
        runs = study_runs(d, 0, backbone)
        if not set.intersection(*(_run_file_seeds(folder, r.preset, r.split, r.backbone) for _, r in runs)):
            return False
    return True


def result_folders(results: Path) -> list[Path]:
    """Of ``results`` and the folders directly in it (an older world's study kept beside the current
    one, e.g. ``results/v3``), those that hold a result of the page's runs: first those holding a
    complete comparison (``complete``), so that a study still running does not open the page on
    pending columns, ``results`` first among equals; just ``results`` when none holds a result (the
    page then says what is pending)."""
    subs = sorted(p for p in results.iterdir() if p.is_dir()) if results.is_dir() else []
    bb = SCALES["study"].backbone
    found = [p for p in [results, *subs]
             if any(_run_file_seeds(p, r.preset, r.split, bb) for d in DIRECTIONS for _, r in study_runs(d, 0))]
    return sorted(found, key=lambda p: not complete(p)) or [results]


def generator_version(records) -> int:
    """The generator version of the first record (``UNVERSIONED`` if it records none); the current
    one when there is no record."""
    for rec in records:
        if rec is not None:
            return int(rec.get("generator_version") or UNVERSIONED)
    from maskx.data.embedded import GENERATOR_VERSION

    return GENERATOR_VERSION


def class_sets(records, direction: str, version: int) -> tuple[dict, set]:
    """({category id: name}, set A's ids) of ``direction``: as the first record evaluated there records
    them, else from ``version``'s categories."""
    from maskx_study.grids import set_a

    for rec in records:
        per_class = (((rec or {}).get("metrics") or {}).get(direction) or {}).get("per_class")
        if per_class:
            return {v["category_id"]: name for name, v in per_class.items()}, set_a([rec], direction)
    from maskx.data import embedded
    from maskx.data.splits import resolve_split

    cats = embedded.categories(version)
    split = resolve_split(direction, cats, voc_like_ids=embedded.voc_like_category_ids(version))
    return {c["id"]: c["name"] for c in cats}, set(split.a_ids)


def example_ids(records) -> list[int]:
    """The val image ids whose predictions the records keep (the first ``EXAMPLE_IMAGES`` when none)."""
    ids = sorted({int(i) for rec in records if rec for i in (rec.get("examples") or {}).get("image_ids", [])})
    return ids or list(range(1, EXAMPLE_IMAGES + 1))


def default_threshold(records) -> float:
    """The page's default score threshold: the score floor of the kept predictions (``examples.min_score``,
    the highest of the records; ``EXAMPLE_MIN_SCORE`` when none is loaded). At that threshold every kept
    prediction of each column counts, and no column shows fewer instances only because its result kept
    fewer; it is the same for every image."""
    floors = [float((rec.get("examples") or {}).get("min_score", EXAMPLE_MIN_SCORE)) for rec in records if rec]
    return max(floors, default=EXAMPLE_MIN_SCORE)


# ---------------------------------------------------------------- images, ground truth, masks

def val_example(data_dir: Path, image_id: int, version: int, size: int) -> tuple[np.ndarray, list[Instance], str]:
    """Val image ``image_id`` of ``version``'s embedded world with its ground truth: (RGB uint8, instances
    (score None), where they come from). Read from ``data_dir`` when its ``annotations.json`` is
    ``version``'s val split (seed ``VAL_SEED``) and the image file is there, else drawn again: image id
    k + 1 is ``embedded.render(VAL_SEED, k, size, version)`` as its file decodes. Raises ValueError for
    a version that cannot be drawn here."""
    from maskx.evaluate import decode_mask

    ann = Path(data_dir) / "annotations.json"
    if ann.is_file():
        try:
            data = json.loads(ann.read_text())
            info = data.get("info") or {}
            image = next((im for im in data["images"] if im["id"] == image_id), None)
            file = Path(data_dir) / "images" / image["file_name"] if image else None
            if info.get("generator_version") == version and info.get("seed", VAL_SEED) == VAL_SEED and file \
                    and file.is_file():
                from PIL import Image

                gt = []
                for a in data["annotations"]:
                    if a["image_id"] == image_id and not a.get("iscrowd", 0):
                        x, y, w, h = a["bbox"]
                        gt.append(Instance(a["category_id"], [x, y, x + w, y + h], decode_mask(a["segmentation"]), None))
                return np.asarray(Image.open(file).convert("RGB")), gt, f"`{file}`"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: drawn again below
    from maskx.data import embedded
    from maskx.data.synthetic import as_stored

    pixels, objects = embedded.render(VAL_SEED, image_id - 1, size, version)
    ids = [c["id"] for c in embedded.categories(version)]  # class index -> category id, as the data files
    gt = []
    for cls, mask in objects:
        ys, xs = np.nonzero(mask)
        if len(xs):
            gt.append(Instance(ids[cls], [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                               mask, None))
    return as_stored(pixels), gt, f"drawn again (generator version {version}, as `{data_dir}` would hold it)"


def saved_instances(record: dict, image_id: int, thresh: float, shape: tuple) -> tuple[list[Instance], int]:
    """The predictions ``record`` keeps for ``image_id`` with score ≥ ``thresh``: (those with a mask, how
    many have an empty or no mask). Raises ValueError for unreadable entries or masks of another size
    than ``shape``."""
    from maskx.evaluate import decode_mask

    out, empty = [], 0
    try:
        for p in (record.get("examples") or {}).get("predictions", []):
            if p["image_id"] != image_id or p["score"] < thresh:
                continue
            mask = decode_mask(p["segmentation"]) if p.get("segmentation") else None
            if mask is None or not mask.any():
                empty += 1
                continue
            if mask.shape != tuple(shape):
                raise ValueError(f"its masks are {mask.shape[1]} x {mask.shape[0]}, the image {shape[1]} x {shape[0]}")
            x, y, w, h = p["bbox"]
            out.append(Instance(int(p["category_id"]), [x, y, x + w, y + h], mask, float(p["score"])))
    except (KeyError, TypeError) as e:
        raise ValueError(f"unreadable examples ({type(e).__name__}: {e})") from e
    return out, empty


def live_instances(found, thresh: float) -> tuple[list[Instance], int]:
    """A model's ``maskx.instances.Instance`` list → (those with score ≥ ``thresh`` and a mask, how many of
    those above ``thresh`` have an empty or no mask)."""
    keep = [i for i in found if i.score >= thresh]
    out = [Instance(i.category_id, list(i.box), i.mask, float(i.score)) for i in keep if i.mask is not None and i.mask.any()]
    return out, len(keep) - len(out)


def gt_box_instances(record: Optional[dict], image_id: int, shape: tuple) -> Optional[tuple[list[Instance], int]]:
    """The masks ``record``'s mask branch drew on the ground-truth boxes and classes of val image ``image_id``
    (``gt_box_masks``; its image index is id − 1, as the embedded val ids are), pasted into the image,
    each with its recorded IoU: (instances with a mask, how many masks are empty); None when the record
    keeps no such masks for this image."""
    grid = (record or {}).get("gt_box_masks") or {}
    if not grid.get("instances") or not 0 <= image_id - 1 < int(grid.get("images", 0)):
        return None
    from maskx.gt_box_eval import decode_mask
    from maskx_study.grids import paste_box_mask

    out, empty = [], 0
    for x in grid["instances"]:
        if x["image"] != image_id - 1:
            continue
        mask = paste_box_mask(decode_mask(x["mask"]), x["box"], shape)
        if mask.any():
            out.append(Instance(int(x["category_id"]), list(x["box"]), mask, None, float(x["iou"])))
        else:
            empty += 1
    return out, empty


def has_gt_box_masks(records) -> bool:
    """Whether every one of ``records`` keeps masks on ground-truth boxes (and there is at least one)."""
    records = list(records)
    return bool(records) and all(rec and (rec.get("gt_box_masks") or {}).get("instances") for rec in records)


def match_to_gt(instances: list[Instance], gt: list[Instance]) -> list[tuple[Optional[int], Optional[float]]]:
    """Per instance, (the ground-truth instance it is, its mask IoU with it), or (None, None): pairs of
    the same class with box IoU ≥ ``MATCH_BOX_IOU``, one to one, by descending box IoU."""
    from maskx.data.vg_coco import box_iou, match_greedy

    out: list[tuple[Optional[int], Optional[float]]] = [(None, None)] * len(instances)
    if not instances or not gt:
        return out
    iou = box_iou([i.box for i in instances], [g.box for g in gt])
    iou[np.array([i.category_id for i in instances])[:, None] != np.array([g.category_id for g in gt])[None, :]] = 0.0
    for i, j in match_greedy(iou, MATCH_BOX_IOU):
        union = int((instances[i].mask | gt[j].mask).sum())
        out[i] = (j, int((instances[i].mask & gt[j].mask).sum()) / union if union else 0.0)
    return out


def default_image(per_image: dict) -> Optional[int]:
    """The default image: the one whose sparsest column draws the most instances (the first on ties).
    ``per_image``: {image id: [instances drawn per column]}; None when empty."""
    if not per_image:
        return None
    return max(sorted(per_image), key=lambda i: min(per_image[i], default=0))


# ---------------------------------------------------------------- numbers and the sentence

def ap(record: Optional[dict], direction: str, set_name: str) -> Optional[float]:
    """Mask AP (0-100) on ``set_name`` of ``direction`` that ``record`` holds, or None."""
    return ((((record or {}).get("metrics") or {}).get(direction) or {}).get(set_name) or {}).get("segm_AP")


def b_gains(records: dict, direction: str) -> Optional[list[dict]]:
    """Per set-B class of ``direction``: {"class", "class-agnostic", "Mask^X", "oracle", "gain"} (mask AP
    0-100; gain = Mask^X − class-agnostic), biggest gain first (then by name); classes without AP in
    both the class-agnostic and the Mask^X result are left out, the oracle's is None where it has none.
    ``records``: {preset: record}. None when either of those two results or its per-class AP is missing."""
    def per_class(preset):
        return ((((records.get(preset) or {}).get("metrics") or {}).get(direction)) or {}).get("per_class")

    pa, pt, po = per_class(AGNOSTIC), per_class(TRANSFER), per_class(ORACLE) or {}
    if not pa or not pt:
        return None
    rows = [{"class": n, "class-agnostic": v["segm_AP"], "Mask^X": pt[n]["segm_AP"],
             "oracle": (po.get(n) or {}).get("segm_AP"), "gain": round(pt[n]["segm_AP"] - v["segm_AP"], 3)}
            for n, v in pa.items()
            if v.get("set") == "B" and v.get("segm_AP") is not None and (pt.get(n) or {}).get("segm_AP") is not None]
    return sorted(rows, key=lambda r: (-r["gain"], r["class"]))


def _versus(diff: float) -> str:
    return "level with" if round(diff, 1) == 0 else f"{abs(diff):.1f} AP {'above' if diff > 0 else 'below'}"


def headline(agnostic: float, transfer: float, oracle: float, where: str) -> str:
    """One plain sentence on set-B mask AP (0-100) of the class-agnostic head, Mask^X and the oracle: how
    far Mask^X is from the class-agnostic head, how far the oracle is, and the share of that gap transfer
    closes (none when Mask^X is not above the class-agnostic head; no gap when the oracle is not above
    it). ``where`` names the results, e.g. "voc→non-voc, seed 0"."""
    gain, gap = transfer - agnostic, oracle - agnostic
    text = (f"On set B ({where}), Mask^X's masks are {_versus(gain)} the class-agnostic head's "
            f"({transfer:.1f} vs {agnostic:.1f} mask AP)")
    if gap <= 0:
        return text + (f"; the oracle, trained with B's masks, is {_versus(gap)} the class-agnostic head "
                       f"({oracle:.1f}), so there is no gap for transfer to close.")
    text += f"; the oracle, trained with B's masks, is {gap:.1f} AP above it ({oracle:.1f})"
    text += (": transfer closes none of that gap." if gain <= 0 else
             f": transfer closes {100 * gain / gap:.0f} % of that gap.")
    if gap < MIN_MEANINGFUL_GAP:
        text += f" A gap under {MIN_MEANINGFUL_GAP:.0f} AP is within seed-to-seed noise."
    return text


def seed_summary(results: dict, direction: str, where: str) -> Optional[str]:
    """``headline`` on the seed means of Table 2's main-backbone runs in ``results`` ({run key: record}),
    as RESULTS.md computes them (``maskx_study.report.gap_closed``), with the per-seed spread of
    Mask^X − class-agnostic; None unless at least two seeds have both of those results."""
    from maskx_study.report import gap_closed

    v = gap_closed(results, SCALES["study"])[direction]
    paired = v.get("paired")
    if not paired or paired[2] < 2 or None in (v.get("agnostic"), v.get("transfer"), v.get("oracle")):
        return None
    mean, std, n = paired
    return (headline(v["agnostic"], v["transfer"], v["oracle"], where) +
            f" Per seed, Mask^X − class-agnostic on B is {mean:+.1f} ± {std:.1f} AP (n={n}).")
