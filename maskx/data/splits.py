"""Set A (classes with mask labels) / set B (boxes only) splits, by real category id.

Names (paper §4.1):
- ``voc2nonvoc``: A = the 20 PASCAL VOC classes (or the embedded set's 20 voc-like ones), B = the rest;
- ``nonvoc2voc``: the reverse;
- ``randK_tT``: K classes drawn for set A in trial T (K in 20..60 in the paper, T in 0..4),
  deterministic given ``seed``; e.g. ``rand40_t3``;
- ``coco80``: A = the dataset's own ``info["set_A_category_ids"]`` (pass it as ``set_a_ids``): the
  80 classes of the 80-class set in the 3000-class world (``synthetic3k``), the VG classes that map
  to COCO's 80 (``vg_coco``); B = the rest (paper §5);
- ``all``: every class in A and B empty. Only for fully supervised (oracle) training: B is empty,
  so ``require_b=False`` must be passed; evaluation refuses it;
- a path to a JSON file ``{"A": [category ids]}`` for any custom split.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The 20 PASCAL VOC classes as named in COCO 2017 (paper §4.1, following DeepMask).
COCO_VOC_NAMES = frozenset({
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv"})
RANDOM_SIZES = (20, 30, 40, 50, 60)
RANDOM_TRIALS = 5
_RANDOM = re.compile(r"^rand(\d+)_t(\d+)$")


class SplitError(ValueError):
    """A split that cannot be built (unknown name, empty A or B, unknown category ids)."""


@dataclass(frozen=True)
class Split:
    name: str
    a_ids: tuple[int, ...]  # sorted real category ids with mask labels
    b_ids: tuple[int, ...]  # sorted real category ids with boxes only

    def set_of(self, category_id: int) -> str:
        return "A" if category_id in self.a_ids else "B"

    def to_json(self) -> dict:
        return {"name": self.name, "A": list(self.a_ids), "B": list(self.b_ids)}


def split_names() -> list[str]:
    """Every named split of the study: voc2nonvoc, nonvoc2voc and the 25 random ones."""
    return ["voc2nonvoc", "nonvoc2voc"] + [f"rand{k}_t{t}" for k in RANDOM_SIZES for t in range(RANDOM_TRIALS)]


def voc_ids(categories: list[dict], voc_like_ids: list[int] | None = None) -> list[int]:
    """The 20 voc category ids: from the dataset's ``info.voc_like_category_ids`` or by COCO name."""
    known = {c["id"] for c in categories}
    if voc_like_ids:
        ids = sorted(set(voc_like_ids) & known)
    else:
        ids = sorted(c["id"] for c in categories if c["name"] in COCO_VOC_NAMES)
    if len(ids) != 20:
        raise SplitError(
            f"the voc splits need the 20 VOC classes; this dataset has {len(ids)} of them. "
            "Use a COCO-named dataset, one with info.voc_like_category_ids, or a random/custom split")
    return ids


def resolve_split(name: str, categories: list[dict], seed: int = 0, voc_like_ids: list[int] | None = None,
                  require_b: bool = True, set_a_ids: list[int] | None = None) -> Split:
    """Build the named split over the dataset's ``categories`` (COCO ``categories`` list).

    ``voc_like_ids`` and ``set_a_ids``: the dataset's ``info`` entries ``voc_like_category_ids`` and
    ``set_A_category_ids`` (see ``info_split_args``), used by the voc splits and by ``coco80``.
    """
    all_ids = sorted(c["id"] for c in categories)
    if len(set(all_ids)) != len(all_ids):
        raise SplitError("duplicate category ids in the dataset's categories")
    if name in ("voc2nonvoc", "nonvoc2voc"):
        voc = voc_ids(categories, voc_like_ids)
        a = voc if name == "voc2nonvoc" else [i for i in all_ids if i not in voc]
    elif m := _RANDOM.match(name):
        k, trial = int(m.group(1)), int(m.group(2))
        if not 0 < k < len(all_ids):
            raise SplitError(f"split {name!r}: |A| = {k} must be between 1 and {len(all_ids) - 1} "
                             f"(this dataset has {len(all_ids)} classes); empty A or B is not a split")
        rng = np.random.default_rng([seed, k, trial])
        a = sorted(int(i) for i in rng.choice(all_ids, size=k, replace=False))
    elif name == "coco80":
        a = _info_set_a(set_a_ids, all_ids)
    elif name == "all":
        a = all_ids
    elif name.endswith(".json"):
        a = _read_split_file(Path(name), all_ids)
    else:
        raise SplitError(f"unknown split {name!r}; use voc2nonvoc, nonvoc2voc, randK_tT (e.g. rand20_t0), "
                         "coco80, all, or a JSON file {\"A\": [category ids]}")
    a_set = set(a)
    b = [i for i in all_ids if i not in a_set]
    if not a:
        raise SplitError(f"split {name!r} has an empty set A: no class would have mask labels")
    if not b and require_b:
        raise SplitError(f"split {name!r} has an empty set B: nothing to transfer to "
                         "(use 'all' only for fully supervised training)")
    return Split(name=Path(name).stem if name.endswith(".json") else name, a_ids=tuple(a), b_ids=tuple(b))


def _read_split_file(path: Path, all_ids: list[int]) -> list[int]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitError(f"split file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"split file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("A"), list):
        raise SplitError(f"split file {path}: expected an object with a list field 'A' of category ids")
    a = data["A"]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in a):
        raise SplitError(f"split file {path}: field 'A' must hold integer category ids")
    unknown = sorted(set(a) - set(all_ids))
    if unknown:
        raise SplitError(f"split file {path}: category ids {unknown[:10]} are not in the dataset")
    return sorted(set(a))


def info_split_args(info) -> dict:
    """``resolve_split`` keywords from a dataset's ``info`` (any of them may be absent)."""
    info = info if isinstance(info, dict) else {}
    return {"voc_like_ids": info.get("voc_like_category_ids"), "set_a_ids": info.get("set_A_category_ids")}


def _info_set_a(set_a_ids, all_ids: list[int]) -> list[int]:
    if set_a_ids is None:
        raise SplitError("split 'coco80' needs the dataset's info.set_A_category_ids (written by "
                         "`maskx data synth3k` and `maskx data vg-coco`); this dataset has none")
    if not isinstance(set_a_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in set_a_ids):
        raise SplitError(f"info.set_A_category_ids must be a list of integer category ids, got {set_a_ids!r:.80}")
    unknown = sorted(set(set_a_ids) - set(all_ids))
    if unknown:
        raise SplitError(f"info.set_A_category_ids {unknown[:10]} are not categories of this dataset")
    return sorted(set(set_a_ids))
