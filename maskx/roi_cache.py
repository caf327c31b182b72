"""Stage-wise mask training on cached RoI features.

In the second stage of stage-wise training (paper §3.2) the backbone, RPN and box branch are
frozen, so what the mask branch sees of a training image (its positive RoIs' pooled features
and their mask targets) does not change from step to step. ``build_roi_cache`` computes it once
per detector; every stage-wise run of that detector (Tables 1a-c, Figure 3, the deeper head)
then trains only the mask branch, skipping the frozen backbone's forward (about half of a step on
images): on CPU several times fewer seconds per step (docs/code-notes.md).

What differs from training on images: each image's RoIs are sampled once (torchvision's 25 %
positive sampling of ``rois_per_image`` proposals, then at most ``per_image`` positives) rather
than every time the image comes round, and images are not flipped.

A cache folder (``<detector run>/roi_cache/``) holds
- ``features.npy`` float16 [N, C, 14, 14]: ``mask_roi_pool`` of each positive RoI;
- ``targets.npy`` float16 [N, 28, 28]: its matched ground-truth mask projected on the RoI;
- ``boxes.npy`` float32 [N, 4] (in the resized image), ``labels.npy`` int64 [N] (contiguous
  class label), ``has_mask.npy`` bool [N] (the matched instance has a mask annotation);
- ``offsets.npy`` int64 [I + 1]: image i's RoIs are rows offsets[i]:offsets[i + 1];
- ``meta.json``: what it was built from (detector checkpoint sha256, data, sizes); a cache whose
  meta does not match the run is rebuilt.

A stage-box run (``box_cache_mask_rois``) writes the cache of the detector it trains in its own
pass over the images (``box_cache.build_box_cache``): staged (``detector_sha256`` None,
``staged_from_sha256`` the detector it started from) until ``adopt_roi_cache`` names its checkpoint.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .atomic import atomic_dir, write_json_atomic
from .models.roi_heads import cap_rois, maskx_loss, project_mask_targets, select_mask_rois
from .run_lock import release_lock, take_lock

CACHE_VERSION = 1
ARRAYS = ("features", "targets", "boxes", "labels", "has_mask", "offsets")


class RoICacheError(RuntimeError):
    """A cache folder that cannot be used (truncated, or written by something else)."""


def cache_meta(detector_ckpt: dict, dataset, config, per_image: int) -> dict:
    """What a cache depends on: the detector's weights, the data, the sampling settings."""
    return {"format": f"maskx-roi-cache-{CACHE_VERSION}", "detector_sha256": detector_ckpt.get("sha256"),
            "data": str(dataset.ann_file), "images": len(dataset), "per_image": per_image,
            "rois_per_image": config.rois_per_image, "image_size": config.image_size, "seed": 0}


def sampled_rois(model, image, target, seed: int):
    """What the frozen detector ``model`` (training mode) samples from one training image, as both caches
    build on it: (features, image sizes, targets as resized, and per image ``select_training_samples``'s
    proposals, matched ground-truth indices, labels and regression targets). ``seed`` fixes the draw."""
    torch.manual_seed(seed)
    images, tgts = model.transform([image], [target])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features, tgts)
    proposals, matched, labels, regression_targets = model.roi_heads.select_training_samples(proposals, tgts)
    return features, images.image_sizes, tgts, proposals, matched, labels, regression_targets


class MaskRoIWriter:
    """The rows of a cache being built, image by image, in ``tmp`` (an ``atomic_dir``): ``add`` the
    frozen detector's ``sampled_rois`` of each image (or ``skip`` one without a mask), then ``finish``.
    ``build_roi_cache`` writes a cache with it; ``box_cache.build_box_cache`` the same rows in its own
    pass over the images (``mask=``), as both start from the same forward."""

    def __init__(self, tmp: Path, heads, channels: int, per_image: int, images: int):
        self.tmp, self.heads, self.per_image = Path(tmp), heads, per_image
        pool = heads.mask_roi_pool.output_size[0]
        self.m = 2 * pool  # the mask head upsamples 14 -> 28
        cap = per_image * images  # rows allocated; the file stays sparse beyond what is written
        self.feats = np.lib.format.open_memmap(self.tmp / "features.npy", "w+", np.float16, (cap, channels, pool, pool))
        self.targets = np.lib.format.open_memmap(self.tmp / "targets.npy", "w+", np.float16, (cap, self.m, self.m))
        self.boxes, self.labels, self.has_mask, self.offsets = [], [], [], [0]
        self.t0 = time.perf_counter()

    def skip(self) -> None:
        """An image no RoI of which can reach a mask loss: none cached (nor its forward run)."""
        self.boxes.append(np.zeros((0, 4), np.float32))
        self.labels.append(np.zeros(0, np.int64))
        self.has_mask.append(np.zeros(0, bool))
        self.offsets.append(self.offsets[-1])

    def add(self, features, sizes, tgts, proposals, matched, labels, _regression_targets=None) -> None:
        """One image's rows from ``sampled_rois``' output (its positives of every class, at most
        ``per_image``, drawn with the global torch RNG: one cache serves any split)."""
        every = [torch.ones_like(tgts[0]["has_mask"])]
        rois, idxs, rlabels = select_mask_rois(proposals, labels, matched, every, self.per_image)
        r, s = len(rois[0]), self.offsets[-1]
        if r:
            self.feats[s:s + r] = self.heads.mask_roi_pool(features, rois, sizes).numpy().astype(np.float16)
            self.targets[s:s + r] = project_mask_targets([tgts[0]["masks"]], rois, idxs, self.m).numpy()
        self.boxes.append(rois[0].numpy().astype(np.float32))
        self.labels.append(rlabels[0].numpy().astype(np.int64))
        self.has_mask.append(tgts[0]["has_mask"][idxs[0]].numpy().astype(bool))
        self.offsets.append(s + r)

    def finish(self, meta: dict) -> None:
        """Flush the arrays and write ``meta.json`` (``meta`` and what the build measured)."""
        self.feats.flush()
        self.targets.flush()
        del self.feats, self.targets
        np.save(self.tmp / "boxes.npy", np.concatenate(self.boxes).reshape(-1, 4))
        np.save(self.tmp / "labels.npy", np.concatenate(self.labels))
        np.save(self.tmp / "has_mask.npy", np.concatenate(self.has_mask))
        np.save(self.tmp / "offsets.npy", np.asarray(self.offsets, np.int64))
        write_json_atomic({**meta, "rois": int(self.offsets[-1]),
                           "build_seconds": round(time.perf_counter() - self.t0, 1)}, self.tmp / "meta.json")


@torch.no_grad()
def build_roi_cache(model, dataset, out_dir, meta: dict, progress: bool = True) -> Path:
    """Write the cache of ``model`` (a ``MaskXRCNN`` with its frozen detector loaded) on every
    image of ``dataset`` to ``out_dir`` (atomically: a temporary folder renamed at the end)."""
    out_dir = Path(out_dir)
    model.train()  # training-mode RPN (its pre/post-NMS counts) and RoI sampling, as in stage 2
    with atomic_dir(out_dir) as tmp:  # a stale cache (another detector or data) is replaced
        rows = MaskRoIWriter(tmp, model.roi_heads, model.backbone.out_channels, meta["per_image"], len(dataset))
        for i in tqdm(range(len(dataset)), desc="RoI cache", disable=not progress, dynamic_ncols=True):
            if not has_mask_labels(dataset, i):
                rows.skip()
                continue
            rows.add(*sampled_rois(model, *dataset[i], image_seed(meta, i)))
        rows.finish(meta)
    return out_dir


def image_seed(meta: dict, i: int) -> int:
    """The seed of image ``i``'s RoI draw in a cache built for ``meta``: each image's sample is
    reproducible on its own (both caches draw an image's RoIs with the same seed)."""
    return meta["seed"] * 1_000_003 + i


def has_mask_labels(dataset, i: int) -> bool:
    """Whether image ``i`` of ``dataset`` has an object with a mask annotation (a ``CocoDataset``; any
    other dataset: assumed so). An image of box-only objects (the 3000-class world's set-B objects,
    paper §5) gives the mask branch nothing, under any split: its RoIs are left out of the cache,
    and with them the frozen detector's forward on it. Every other image's rows are as before (each
    image's RoI draw has its own seed)."""
    anns, ids = getattr(dataset, "anns", None), getattr(dataset, "ids", None)
    return anns is None or ids is None or any(it["has_mask"] for it in anns[ids[i]])


def with_every_mask(dataset):
    """The images and annotations of ``dataset`` (a run's ``CocoDataset``, masks of its split's set A
    only) with every mask annotation: what a cache is built on, so that any split can use it."""
    from .data.coco import CocoDataset

    return CocoDataset(dataset.images_dir, dataset.ann_file, data=dataset.data)


def roi_cache_dir(detector_dir) -> Path:
    """Where the RoI cache of the detector trained in ``detector_dir`` lives."""
    return Path(detector_dir) / "roi_cache"


FROZEN_WEIGHTS = ("backbone.", "rpn.")  # what a cache's rows depend on (``sampled_rois``; the RoI pools have none)


def adopt_roi_cache(detector_dir, source_dir) -> bool:
    """Make the cache that ``detector_dir``'s stage-box run staged in ``roi_cache_dir(detector_dir)``
    (``box_cache.build_box_cache(mask=...)``, from ``source_dir``'s detector, the one that run started
    from) the cache of ``detector_dir``'s newest checkpoint: when the staged cache names ``source_dir``'s
    newest checkpoint and every backbone and RPN tensor of the two checkpoints is equal, its ``meta.json``
    names ``detector_dir``'s (True). Otherwise nothing changes (False): a stage-mask run on
    ``detector_dir`` builds its own."""
    from .checkpoint import find_checkpoint, model_state

    path = roi_cache_dir(detector_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    (box_meta, box_tensors), (src_meta, src_tensors) = find_checkpoint(detector_dir), find_checkpoint(source_dir)
    if meta.get("detector_sha256") is not None or meta.get("staged_from_sha256") != src_meta.get("sha256"):
        return False
    box_state, src_state = model_state(box_tensors), model_state(src_tensors)
    frozen = {k for k in set(box_state) | set(src_state) if k.startswith(FROZEN_WEIGHTS)}
    if not frozen or any(k not in box_state or k not in src_state or not torch.equal(box_state[k], src_state[k])
                         for k in frozen):
        return False
    write_json_atomic({**meta, "detector_sha256": box_meta.get("sha256")}, path)
    return True


BUILD_OUTPUTS = ("rois", "build_seconds")  # written by the build, not part of what a cache depends on


def cache_matches(cache_dir, meta: dict) -> bool:
    """Whether ``cache_dir`` was built for ``meta`` (``cache_meta``; ``BUILD_OUTPUTS`` in it are ignored)."""
    path = Path(cache_dir) / "meta.json"
    if not path.is_file():
        return False
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in meta.items() if k not in BUILD_OUTPUTS)


def ensure_roi_cache(model, dataset, cache_dir, meta: dict, progress: bool = True, wait_seconds: float = 3600) -> Path:
    """``ensure_cache`` of the mask branch's RoI cache (``build_roi_cache``)."""
    return ensure_cache(model, dataset, cache_dir, meta, build_roi_cache, progress, wait_seconds)


def ensure_cache(model, dataset, cache_dir, meta: dict, build, progress: bool = True, wait_seconds: float = 3600) -> Path:
    """The cache at ``cache_dir`` if it matches ``meta``, else built there by ``build(model, dataset,
    cache_dir, meta, progress)`` (``build_roi_cache``, ``box_cache.build_box_cache``). Processes sharing a
    detector (``study run --jobs 2``) build it once: the others wait for the builder's lock
    (``run_lock``: a lock whose builder died, e.g. at the end of a session, is taken over at once,
    and the builder's half-written folder removed; one held longer than ``wait_seconds`` too, its
    folder kept: that builder may still finish)."""
    cache_dir = Path(cache_dir)
    lock = cache_dir.with_name(cache_dir.name + ".lock")
    deadline = time.monotonic() + wait_seconds
    overtaken = False  # a live builder's lock taken after wait_seconds: its folder is left to it
    while not cache_matches(cache_dir, meta):
        if not take_lock(lock):
            if time.monotonic() > deadline:
                lock.unlink(missing_ok=True)  # a builder that hangs: take over
                overtaken = True
            time.sleep(5)
            continue
        try:
            for tmp in [] if overtaken else cache_dir.parent.glob(f".{cache_dir.name}.tmp-*"):  # a dead builder's
                shutil.rmtree(tmp, ignore_errors=True)
            if not cache_matches(cache_dir, meta):
                build(model, dataset, cache_dir, meta, progress)
                if not cache_matches(cache_dir, meta):  # never rebuild in a loop
                    raise RoICacheError(f"{cache_dir}: the cache just built does not match what was asked "
                                        f"({meta}); a bug: please report it")
        finally:
            release_lock(lock)
    return cache_dir


def open_cache(cache_dir: Path, arrays: tuple, what: str) -> tuple[dict, np.ndarray]:
    """The ``arrays`` of a cache folder, memory-mapped, and its ``offsets``; ``RoICacheError`` naming the
    folder when one is unreadable or holds fewer rows than the offsets index (``what``: the cache's name)."""
    try:
        out = {a: np.load(cache_dir / f"{a}.npy", mmap_mode="r") for a in arrays}
    except (OSError, ValueError) as e:
        raise RoICacheError(f"{cache_dir}: unreadable {what} ({e}); delete the folder and train again "
                            "(it is rebuilt from the detector)") from e
    offsets = np.asarray(out["offsets"])
    rows = int(offsets[-1])
    if any(len(out[a]) < rows for a in arrays if a != "offsets"):
        raise RoICacheError(f"{cache_dir}: the {what} is truncated ({rows} RoIs indexed); delete the folder "
                            "and train again")
    return out, offsets


class CachedRoIs(torch.utils.data.Dataset):
    """Image i → (pooled features [R, C, 14, 14] float32, {"labels" [R], "mask_targets" [R, 28, 28]})
    for its cached RoIs whose class is in ``mask_labels`` (set A) and whose instance has a mask.
    ``flippable = False``: ``engine.SampleStream`` does not flip these."""

    flippable = False

    def __init__(self, cache_dir, mask_labels):
        self.dir = Path(cache_dir)
        arrays, self.offsets = open_cache(self.dir, ARRAYS, "RoI cache")
        self.features, self.targets = arrays["features"], arrays["targets"]
        allowed = np.zeros(int(arrays["labels"].max(initial=0)) + 1, bool)
        allowed[[lab for lab in mask_labels if lab < len(allowed)]] = True
        self.keep = allowed[arrays["labels"]] & np.asarray(arrays["has_mask"])
        self.labels = np.asarray(arrays["labels"])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int):
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        rows = np.nonzero(self.keep[s:e])[0] + s
        feats = torch.from_numpy(np.asarray(self.features[rows], np.float32))
        return feats, {"labels": torch.from_numpy(self.labels[rows]),
                       "mask_targets": torch.from_numpy(np.asarray(self.targets[rows], np.float32))}


class CachedMaskTraining(nn.Module):
    """``model``'s mask loss on cached RoIs: the module ``engine.train`` steps in a cached stage-2 run.

    forward(features per image [R_i, C, 14, 14], targets per image) → {"loss_mask"}: the model's own
    ``maskx_loss`` on at most ``max_per_image`` RoIs of each image (``cap_rois``, as on images).
    """

    def __init__(self, model, max_per_image: int = 0):
        super().__init__()
        self.model, self.max_per_image = model, max_per_image

    def forward(self, features: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        xs, labels, goal = [], [], []
        for f, t in zip(features, targets):
            keep = cap_rois(torch.arange(len(f)), self.max_per_image)
            xs.append(f[keep])
            labels.append(t["labels"][keep])
            goal.append(t["mask_targets"][keep])
        logits = self.model.roi_heads.mask_logits_from_pooled(torch.cat(xs), torch.cat(labels))
        return {"loss_mask": maskx_loss(logits, torch.cat(goal))}


def cached_training(model, dataset, split, config, detector_dir, progress: bool = True
                    ) -> tuple[CachedMaskTraining, CachedRoIs]:
    """The module and dataset of a stage-2 run with ``config.mask_roi_cache`` RoIs per image cached
    under ``detector_dir/roi_cache`` (built first if missing or stale). ``dataset`` is the run's
    (masks of set A only); the cache holds every class's masks, so any split can use it."""
    from .checkpoint import find_checkpoint

    ckpt, _ = find_checkpoint(detector_dir)
    every_mask = with_every_mask(dataset)
    meta = cache_meta(ckpt, every_mask, config, config.mask_roi_cache)
    cache = ensure_roi_cache(model, every_mask, roi_cache_dir(detector_dir), meta, progress)
    a_labels = [dataset.categories.label(c) for c in split.a_ids if c in set(dataset.categories.ids)]
    return CachedMaskTraining(model, config.mask_rois_per_image), CachedRoIs(cache, a_labels)

