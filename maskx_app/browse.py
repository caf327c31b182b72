"""Open any dataset folder the app can browse: COCO format (``annotations.json`` + ``images/``,
or a COCO annotations file with its image folder) or Visual Genome (``image_data.json`` +
``objects.json``). Anything else is a ``DatasetError`` that says what was expected.

Also what the Browse page computes (no Streamlit here): the classes of each image, ground truth as
drawable instances, COCO AP on the first images, and the generation of a missing val folder of
an embedded world with that world's own generator, reporting its progress."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from maskx.data.coco import CocoDataset, DatasetError


def open_dataset(path, images: Optional[str] = None, check_files: bool = False):
    """→ (dataset, kind) with kind "coco" or "vg"; ``dataset`` has ``ids``, ``categories``,
    ``__getitem__`` (image [3, H, W], target) like ``CocoDataset``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir() and (p / "image_data.json").is_file() and (p / "objects.json").is_file():
        from maskx.data.visual_genome import VisualGenomeDataset

        return VisualGenomeDataset(p, check_files=check_files), "vg"
    if p.is_dir() and (p / "annotations.json").is_file():
        return CocoDataset.from_dir(p, check_files=check_files), "coco"
    if p.is_file() and p.suffix == ".json":
        image_dir = Path(images) if images else p.parent / "images"
        return CocoDataset(image_dir, p, check_files=check_files), "coco"
    raise DatasetError(f"{p}: not a dataset folder. Expected annotations.json + images/ (COCO format, e.g. "
                       "from `python -m maskx data synth`), a COCO annotations .json file, or a Visual Genome "
                       "folder with image_data.json and objects.json")


# ---------------------------------------------------------------- what the page shows of a dataset

def image_classes(ds) -> dict:
    """{image id: set of class names} from the annotations (no image is decoded)."""
    cats = ds.categories
    out = {}
    for iid in ds.ids:
        labels = [cats.label(it["ann"]["category_id"]) if "ann" in it else it["label"] for it in ds.anns[iid]]
        out[iid] = {cats.name(k) for k in labels}
    return out


def ground_truth(ds, target, a_names) -> list:
    """Dataset target → drawable instances (no score; VG has boxes only)."""
    from maskx_app.visualize import Drawn

    masks, has = target.get("masks"), target.get("has_mask")
    out = []
    for k in range(target["boxes"].shape[0]):
        name = ds.categories.name(int(target["labels"][k]))
        mask = masks[k].numpy().astype(bool) if masks is not None and bool(has[k]) else None
        out.append(Drawn([float(v) for v in target["boxes"][k]], mask, name, None, name in a_names))
    return out


def comparable(ds, kind, predictor) -> str:
    """Why the model's AP cannot be computed on this dataset ('' if it can)."""
    if kind != "coco":
        return "this dataset has no masks (Visual Genome): mask AP needs a COCO-format dataset"
    names = dict(zip(ds.categories.ids, ds.categories.names))
    if any(names.get(cid) != n for cid, n in zip(predictor.category_ids, predictor.class_names)):
        return "the model's classes (ids and names) are not this dataset's"
    return ""


def evaluate_first(ds, predictor, n: int, predict: Callable, on_progress: Optional[Callable] = None) -> dict:
    """COCO AP on A and B over the first ``n`` images (maskx.evaluate on a subset of the ground truth).
    ``predict(image [3, H, W], image id)`` → the model's instances (the app passes its cached call);
    ``on_progress(done, total)`` after each image."""
    from maskx.data.splits import Split
    from maskx.evaluate import evaluate_predictions
    from maskx.instances import coco_entries

    ids = ds.ids[:n]
    keep = set(ids)
    gt = {**ds.data, "images": [im for im in ds.data["images"] if im["id"] in keep],
          "annotations": [a for a in ds.data["annotations"] if a["image_id"] in keep]}
    a_ids = tuple(sorted(set(predictor.set_a) & set(ds.categories.ids)))
    split = Split("model", a_ids, tuple(c for c in ds.categories.ids if c not in set(a_ids)))
    preds = []
    for k, iid in enumerate(ids):
        image, _ = ds[k]
        preds.extend(coco_entries(predict(image, iid), iid))
        if on_progress is not None:
            on_progress(k + 1, len(ids))
    return evaluate_predictions(gt, preds, split)


def per_class_metrics(record: Optional[dict]) -> Optional[dict]:
    """The metrics with per-class AP in an ``eval.json``: itself (``maskx eval``, ``maskx ship``) or,
    in a study record ({"metrics": {direction: metrics}}), the first direction's; None if none has it."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("per_class"), dict):
        return record
    inner = record.get("metrics", record)
    return next((v for v in inner.values() if isinstance(v, dict) and isinstance(v.get("per_class"), dict)),
                None) if isinstance(inner, dict) else None


# ---------------------------------------------------------------- a missing val folder, generated

@dataclass(frozen=True)
class MissingVal:
    """The val folder of an embedded world that is not there yet, and how it is made."""
    path: Path
    world: str  # "3000-class" or "80-class"
    images: int  # the val part's size in the world's "default" SIZES entry
    image_size: int
    seed: int
    command: str  # the command line that writes it
    command_note: str  # what else that command does


def _shown(path: Path) -> str:
    """``path`` as a command line names it: relative to the current folder when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def missing_val(path) -> Optional[MissingVal]:
    """How to make ``path`` when it is an absent ``val`` folder of an embedded world: under a folder
    ``synth3k`` the 3000-class world's (as the app's sample images), under another ``synth*`` folder
    the 80-class one's; None for any other path (nothing the app knows how to make)."""
    p = Path(path).expanduser()
    if p.exists() or p.name != "val":
        return None
    if "synth3k" in p.parts:
        from maskx.data.synthetic3k import PARTS, SIZES

        spec, seed = SIZES["default"], next(s for part, s, _ in PARTS if part == "val")
        return MissingVal(p, "3000-class", spec["val"], spec["image_size"], seed,
                          f"python -m maskx data synth3k --out {_shown(p.parent)}",
                          f"also writes {_shown(p.parent / 'train')} ({spec['train']} training images) and takes "
                          "several minutes")
    if p.parent.name.startswith("synth"):
        from maskx.data.synthetic import SIZES

        spec = SIZES["default"]
        return MissingVal(p, "80-class", spec["val"], spec["image_size"], 1,
                          f"python -m maskx data synth --out {_shown(p)} --images {spec['val']} --seed 1 "
                          f"--image-size {spec['image_size']} --workers 2", "")
    return None


class _Job:
    """One generation in a background thread; its progress is the count of image files written
    into the generator's temporary folder beside the target (``maskx.atomic.atomic_dir``)."""

    def __init__(self, missing: MissingVal, images: int, workers: int):
        self.missing, self.total = missing, images
        self.before = set(self._tmp_dirs())  # left by an earlier, killed run: not this one's progress
        self.summary: Optional[dict] = None
        self.error: Optional[BaseException] = None
        self.seen = 0  # the largest count ``done`` has reported
        self.thread = threading.Thread(target=self._run, args=(workers,), name="maskx-generate", daemon=True)

    def _tmp_dirs(self) -> list:
        p = self.missing.path
        return list(p.parent.glob(f".{p.name}.tmp-*")) if p.parent.is_dir() else []

    def _run(self, workers: int) -> None:
        p, m = self.missing.path, self.missing
        try:
            if m.world == "3000-class":
                from maskx.data.synthetic3k import generate3k

                self.summary = generate3k(p, self.total, seed=m.seed, image_size=m.image_size, masks="all",
                                          workers=workers)
            else:
                from maskx.data.embedded import generate

                self.summary = generate(p, self.total, seed=m.seed, image_size=m.image_size, workers=workers)
        except BaseException as e:  # handed to the caller, who reports it
            self.error = e

    def done(self) -> int:
        """Images written so far (all of them once the folder is in place); never less than an earlier
        answer (the temporary folder empties when it is renamed into place, before the thread ends)."""
        if not self.thread.is_alive() and self.error is None:
            return self.total
        counts = [self.seen]
        for d in self._tmp_dirs():
            if d not in self.before and (d / "images").is_dir():
                counts.append(sum(1 for _ in (d / "images").iterdir()))
        self.seen = min(max(counts), self.total)
        return self.seen


_jobs: dict[str, _Job] = {}
_jobs_lock = threading.Lock()


def generation_running(path) -> bool:
    """Whether a generation of ``path`` runs in this process (started by any session)."""
    job = _jobs.get(str(Path(path).expanduser().absolute()))
    return job is not None and job.thread.is_alive()


def generate_val(missing: MissingVal, images: Optional[int] = None, workers: Optional[int] = None,
                 on_progress: Optional[Callable[[int, int], None]] = None, poll_s: float = 0.5) -> dict:
    """Write the first ``images`` images (default: all) of the val part ``missing`` describes with the
    world's own generator, the same images the full part holds, in a background thread, calling
    ``on_progress(done, total)`` from this thread every ``poll_s`` seconds; returns the generator's
    summary. A generation of the same folder already under way (another session, or a page run that
    was stopped while the thread went on) is joined, not started twice."""
    n = missing.images if images is None else int(images)
    if n < 1:
        raise ValueError(f"images must be >= 1, got {n}")
    if workers is None:  # a process pool costs seconds to start: worth it only for many images
        workers = 1 if n < 100 else max(1, min(4, os.cpu_count() or 1))
    key = str(missing.path.absolute())
    with _jobs_lock:
        job = _jobs.get(key)
        if job is None or not job.thread.is_alive():
            if (missing.path / "annotations.json").is_file():  # made meanwhile
                return {}
            job = _jobs[key] = _Job(missing, n, workers)
            job.thread.start()
    while job.thread.is_alive():
        job.thread.join(poll_s)
        if on_progress is not None:
            on_progress(job.done(), job.total)
    if job.error is not None:
        raise job.error
    return job.summary or {}
