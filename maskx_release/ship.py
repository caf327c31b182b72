"""The shipped 3000-class model: one command trains it from a fresh clone, exports it, measures it.

    python -m maskx ship                      # data → train (resumable) → fp16 export → AP on A and B
    maskx.load("maskx-3k").predict(image)     # the committed result, offline

Steps (each skipped when its output is already there): generate the embedded 3000-class world
(``data/synth3k``), train preset ``maskx_3k`` into ``runs/maskx-3k`` (CPU, deterministic: the
same weights on every run on the same machine type), export the last checkpoint's model weights
to ``models/maskx-3k`` (fp16 when that keeps AP; no optimizer state), and evaluate fp32 and the
export on the val split (masks for every class), written to ``models/maskx-3k/eval.json``; last,
its masks on the app's sample images, ``models/maskx-3k/examples.json`` (``write_examples``), which
the app draws before torch is imported, and the classes' embedding projections for the app's
Embeddings page, ``models/maskx-3k/projections.npz`` (``write_projections``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from maskx.atomic import write_json_atomic
from maskx.checkpoint import find_checkpoint, list_checkpoints, save_checkpoint
from maskx.config import Config, ConfigError, get_preset
from maskx.evaluate import ap_by_frequency
from maskx.hub import resolve
from maskx_app.class_examples import iou as mask_iou
from maskx_app.projection import PROJECTIONS_FILE
from maskx_app.samples import (DEFAULT_SCORE, SAMPLE_IMAGES, SAMPLE_RULE, SAMPLE_SIZE, pick_sample_ids,
                               saved_samples, training_counts)

MAX_BYTES = 40 * 1024 * 1024
FP16_MAX_AP_DROP = 0.1  # ship fp16 when segm AP on A and on B drop by at most this much ...
FP16_CHECK_IMAGES = 200  # ... on the first 200 val images
SHIP_GT_BOX_IMAGES = 300  # masks on ground-truth boxes and classes: the first 300 val images (~1500 instances)
APP_ROI_ALIGN_FORWARD = "sparse"  # the app's samples are predicted as the app predicts


def export(run_dir, out_dir, dtype: Optional[torch.dtype]) -> Path:
    """Write the newest checkpoint of ``run_dir`` as a model-only checkpoint in ``out_dir``."""
    from maskx.predictor import load

    meta, _ = find_checkpoint(run_dir)
    predictor = load(run_dir)
    out_dir = Path(out_dir)
    for old in list_checkpoints(out_dir):
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink()
    keep = {k: v for k, v in meta.items() if k not in ("format", "weights", "bytes", "sha256", "iteration")}
    keep["exported_from"] = {"run": str(run_dir), "iteration": meta["iteration"], "sha256": meta["sha256"],
                             "dtype": str(dtype or torch.float32).replace("torch.", "")}
    return save_checkpoint(out_dir, int(meta["iteration"]), predictor.model, keep, optimizer=None, keep=1, dtype=dtype)


def val_split(data_dir, images: Optional[int] = None):
    """The 3000-class val split (its first ``images`` images when given) and its coco80 A/B split."""
    from maskx.data.coco import CocoDataset, read_json
    from maskx.data.splits import info_split_args, resolve_split

    ann = Path(data_dir) / "val" / "annotations.json"
    data = read_json(ann)
    if images:
        keep = {im["id"] for im in data["images"][:images]}
        data = {**data, "images": data["images"][:images],
                "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
    val = CocoDataset(ann.parent / "images", ann, data=data)
    return val, resolve_split("coco80", val.data["categories"], **info_split_args(val.data.get("info")))


def evaluate_on_val(path, data_dir, progress: bool = True, images: Optional[int] = None,
                   also_first: Optional[int] = None) -> dict:
    """AP on A and B over the val split (its first ``images`` images when given). ``also_first``: the
    metrics of the first N of those images too, from the same predictions, under ``"first"``
    (what ``evaluate_on_val(path, data_dir, images=N)`` returns, without predicting twice)."""
    from maskx.engine import evaluate_model
    from maskx.evaluate import evaluate_predictions
    from maskx.predictor import load

    val, split = val_split(data_dir, images)
    t0 = time.perf_counter()
    metrics, preds = evaluate_model(load(path), val, split, progress=progress)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
    if also_first:
        first, first_split = val_split(data_dir, also_first)
        keep = {im["id"] for im in first.data["images"]}
        metrics["first"] = evaluate_predictions(first.data, [p for p in preds if p["image_id"] in keep], first_split)
    return metrics


def gt_box_ious(path, data_dir, progress: bool = True, images: int = SHIP_GT_BOX_IMAGES) -> dict:
    """Mean mask IoU on set A and set B given ground-truth boxes and classes (``gt_box_eval``)."""
    from maskx.gt_box_eval import mask_iou_on_gt_boxes
    from maskx.predictor import load

    val, split = val_split(data_dir, images)
    out = mask_iou_on_gt_boxes(load(path), val, split, progress=progress)
    return {k: v for k, v in out.items() if k != "per_class"}


STAGES = ("detector", "box")  # the runs before the mask stage, each in runs/<stage>, each the next one's detector


def build_shipped(out="models/maskx-3k", data="data/synth3k", runs="runs/maskx-3k", preset: str = "maskx_3k",
                  baseline: Optional[str] = "agnostic_mlp_3k", detector: str = "maskx_3k_detector",
                  box: Optional[str] = "maskx_3k_box", iters: Optional[int] = None, progress: bool = True, log=print,
                  size: str = "default", overrides: tuple = ()) -> dict:
    """Everything ``python -m maskx ship`` does; returns a summary (also in ``out/eval.json``).

    Stage-wise, as the paper's §5: the ``detector`` preset on A ∪ B into ``runs/detector``; its box head
    re-trained on cached RoI features (``box``, stage box, ``maskx.box_cache``) into ``runs/box``; then
    ``preset`` (stage mask: T + the MLP branch, set A's masks) on that frozen detector into ``runs``, and
    ``baseline`` (the class-agnostic + MLP head) trained the same way on the same detector into
    ``runs-baseline``. Each finished run is kept; a killed one resumes. ``iters`` (tests) sets every
    run's iterations; ``overrides`` apply to every run."""
    from maskx.data.coco import read_json
    from maskx.data.synthetic3k import GENERATOR_VERSION, ensure_dataset3k

    out, runs = Path(out), Path(runs)

    def configured(name: str):
        c = get_preset(name).with_overrides(list(overrides))
        return c.replace(iters=iters) if iters else c

    config = configured(preset)
    if config.stage != "mask":
        raise ValueError(f"preset {preset!r} is stage {config.stage!r}; the shipped model is trained stage-wise "
                         "(a stage 'mask' preset, e.g. maskx_3k)")
    log(f"1/5 data: {data} (3000-class world version {GENERATOR_VERSION})")
    ensure_dataset3k(data, size, progress=progress)
    train = Path(data) / "train"
    seconds = {}
    previous = None
    for stage, name in zip(STAGES, (detector, box)):
        if name is None:
            continue
        cfg = configured(name).replace(**({"detector": str(previous.resolve())} if previous else {}))
        log(f"2/5 {stage}: {name} ({cfg.iters} iterations) into {runs / stage}")
        seconds[stage] = _train(cfg, train, runs / stage, progress)
        previous = runs / stage
    log(f"2/5 mask: {preset} ({config.iters} iterations) into {runs}")
    seconds["mask"] = _train(config.replace(detector=str(previous.resolve())), train, runs, progress)
    base_runs = runs.with_name(runs.name + "-baseline")
    if baseline:
        log(f"2/5 baseline: {baseline} on the same detector into {base_runs}")
        seconds["baseline"] = _train(configured(baseline).replace(detector=str(previous.resolve())), train, base_runs,
                                     progress)
    t0 = time.perf_counter()
    log(f"3/5 comparing the fp32 weights with an fp16 export on {FP16_CHECK_IMAGES} val images "
        "(the fp16 export on the whole val split: its evaluation if it is shipped)")
    fp32 = evaluate_on_val(runs, data, progress, images=FP16_CHECK_IMAGES)
    tmp16 = out.parent / f".{out.name}-fp16"
    sha16 = json.loads(export(runs, tmp16, torch.float16).read_text())["sha256"]
    shipped = evaluate_on_val(tmp16, data, progress, also_first=FP16_CHECK_IMAGES)
    fp16 = shipped.pop("first")
    drop = max(fp32[s]["segm_AP"] - fp16[s]["segm_AP"] for s in ("A", "B"))
    use16 = drop <= FP16_MAX_AP_DROP
    log(f"4/5 exporting {'fp16' if use16 else 'fp32'} (fp16 changes segm AP by at most {drop:.2f}) to {out}")
    path = export(runs, out, torch.float16 if use16 else None)
    if use16 and json.loads(path.read_text())["sha256"] != sha16:
        raise RuntimeError(f"{path}: the fp16 export differs from the one just evaluated ({sha16[:12]}…)")
    for f in tmp16.glob("*"):
        f.unlink()
    tmp16.rmdir()
    if not use16:
        log("evaluating the exported fp32 model on the whole val split")
        shipped = evaluate_on_val(out, data, progress)
    log(f"5/5 naming, masks on ground-truth boxes ({SHIP_GT_BOX_IMAGES} val images), w_det's similarity index, "
        "the app's samples")
    counts = training_counts(read_json(Path(data) / "train" / "annotations.json")["annotations"])
    naming = naming_on_val(out, data, progress, train_counts=counts)
    gt_boxes = gt_box_ious(out, data, progress)
    if baseline:
        gt_boxes["baseline"] = {k: v for k, v in gt_box_ious(base_runs, data, progress).items() if k in ("A", "B")}
    val = read_json(Path(data) / "val" / "annotations.json")
    sample_ids = pick_sample_ids(val, counts, val["info"]["set_A_category_ids"])
    samples = app_samples(out, data, val, DEFAULT_SCORE, sample_ids, progress=progress)
    meta = json.loads(path.read_text())
    weights = path.with_suffix(".safetensors")
    if weights.stat().st_size > MAX_BYTES:
        log(f"warning: {weights} is {weights.stat().st_size / 2**20:.1f} MB, over the 40 MB budget")
    seconds["evaluate"] = round(time.perf_counter() - t0, 1)
    summary = {"preset": preset, "stages": {"detector": detector, "box": box, "mask": preset, "baseline": baseline},
               "world_version": GENERATOR_VERSION, "config": meta["config"],
               "checkpoint": str(path), "sha256": meta["sha256"],
               "megabytes": round(weights.stat().st_size / 2**20, 2), "dtype": "float16" if use16 else "float32",
               "seconds_this_call": seconds, "eval_seconds": shipped["eval_seconds"],
               "fp16_check": {"images": FP16_CHECK_IMAGES, "fp32": _headline(fp32), "fp16": _headline(fp16)},
               "A": shipped["A"], "B": shipped["B"], "ap_by_frequency": ap_by_frequency(shipped["per_class"], counts),
               "naming_on_gt_boxes": naming, "masks_on_gt_boxes": gt_boxes,
               "similarity": w_det_similarity(out, val["categories"]), "app_samples": samples,
               "per_class": shipped["per_class"], "split": shipped["split"], "num_images": shipped["num_images"],
               # bit for bit holds on this kind of CPU (docs/reproducibility.md): the one the training ran on
               "trained_on_cpu": json.loads((runs / "run.json").read_text()).get("cpu")}
    write_json_atomic(summary, out / "eval.json")
    log(f"the model's masks on the app's {len(sample_ids)} sample images → {out / 'examples.json'}")
    write_examples(out, sample_ids, data)
    log(f"the classes' embedding projections for the app's Embeddings page → {out / PROJECTIONS_FILE}")
    write_projections(out)
    return {k: v for k, v in summary.items() if k not in ("per_class", "config", "split")}


def _train(config, train_dir, run_dir: Path, progress: bool) -> float:
    """Train ``config`` into ``run_dir`` unless it finished there (resuming a killed run); its seconds."""
    from maskx.train import run_training

    t0 = time.perf_counter()
    if not (run_dir / "done.json").is_file():
        run_training(config, train_dir, run_dir, resume=bool(list_checkpoints(run_dir)), progress=progress)
    return round(time.perf_counter() - t0, 1)


def naming_on_val(path, data_dir, progress: bool = True, images: int = SHIP_GT_BOX_IMAGES,
                  train_counts: Optional[dict] = None) -> dict:
    """Top-1 / top-5 exact naming on set A and set B given the ground-truth boxes (``naming_on_gt_boxes``;
    by LVIS frequency group too with ``train_counts``)."""
    from maskx.gt_box_eval import naming_on_gt_boxes
    from maskx.predictor import load

    val, split = val_split(data_dir, images)
    return naming_on_gt_boxes(load(path), val, split, progress=progress, train_counts=train_counts)


def w_det_similarity(path, categories: list) -> dict:
    """The similarity index (``maskx.diagnostics.similarity_indices``) of the model's w_det = [w_cls, w_box]
    against the classes' attributes: do classes that share attributes have alike detection weights?"""
    from maskx.diagnostics import attribute_matrix, category_attributes, class_embedding_matrix, similarity_indices
    from maskx.predictor import load

    predictor = load(path)
    names = [c["name"] for c in categories]
    emb = class_embedding_matrix(predictor.model, names, "cls+box")
    attrs = attribute_matrix(category_attributes(categories))[0]
    in_b = np.array([c["id"] not in predictor.set_a for c in categories])
    out = similarity_indices(emb, attrs, in_b)
    return {"input": "cls+box", **{k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in r.items()}
                                   for k, r in out.items()}}


APP_IOU = 0.5  # a sample "shows" a set-B instance when one is named right with mask IoU at least this


def shows_named_b(instances: list, gt: list[tuple[int, "np.ndarray"]], set_a_ids, score: float, iou: float = APP_IOU) -> bool:
    """Whether an image's ``instances`` (``maskx.instances.Instance``) show, at ``score`` and above, a
    set-B object (``gt``: [(category id, bool mask [H, W])], classes not in ``set_a_ids``) with its
    correct class name and a mask of IoU >= ``iou`` against that object's ground-truth mask."""
    a_ids = set(set_a_ids)
    for inst in instances:
        if inst.score < score or inst.category_id in a_ids or inst.mask is None:
            continue
        if any(cid == inst.category_id and mask_iou(inst.mask, mask) >= iou for cid, mask in gt):
            return True
    return False


def set_b_masks(annotations: list[dict], set_a_ids) -> list[tuple[int, "np.ndarray"]]:
    """[(category id, bool mask [H, W])] of an image's COCO ``annotations`` of set-B classes (not in
    ``set_a_ids``) that have a mask: what ``shows_named_b`` matches against."""
    from pycocotools import mask as mask_utils

    return [(a["category_id"], mask_utils.decode(a["segmentation"]).astype(bool)) for a in annotations
            if a["category_id"] not in set_a_ids and "segmentation" in a]


def app_samples(path, data_dir, val: dict, score: float, sample_ids: list[int], first: int = 100,
                progress: bool = True) -> dict:
    """How many of the app's sample images (``sample_ids``), and of the first ``first`` val images, show at
    the app's default threshold ``score`` at least one set-B object named and masked right
    (``shows_named_b``), predicted as the app predicts them. ``val``: ``data_dir``'s val annotations."""
    from maskx.predictor import load

    predictor = load(path, roi_align_forward=APP_ROI_ALIGN_FORWARD)
    a_ids = set(val["info"]["set_A_category_ids"])
    by_image: dict = {}
    for a in val["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = {im["id"]: im for im in val["images"]}
    firsts = sorted(images)[:first]
    shown = {}
    for image_id in tqdm(sorted(set(firsts) | set(sample_ids)), desc="app samples", disable=not progress,
                         dynamic_ncols=True):
        im = images[image_id]
        gt = set_b_masks(by_image.get(image_id, []), a_ids)
        rgb = np.asarray(Image.open(Path(data_dir) / "val" / "images" / im["file_name"]).convert("RGB"))
        shown[image_id] = shows_named_b(predictor.predict(rgb, score_thresh=score), gt, a_ids, score)
    return {"score_thresh": score, "iou": APP_IOU,
            "samples": {"images": len(sample_ids), "with_named_B": sum(shown[i] for i in sample_ids), "ids": list(sample_ids)},
            f"first_{first}": {"images": len(firsts), "with_named_B": sum(shown[i] for i in firsts)}}


def example_images(image_ids: Optional[list] = None, data_dir=None, n: int = SAMPLE_IMAGES) -> list:
    """[(image id, RGB uint8 [256, 256, 3])]: the 3000-class val images the app shows as samples, read from
    ``data_dir``/val when given, else rendered (val image i is ``render3k(1, i - 1)``); ``image_ids``
    (``pick_sample_ids``) default to the first ``n``."""
    from maskx.data.synthetic import as_stored
    from maskx.data.synthetic3k import render3k

    image_ids = list(image_ids) if image_ids is not None else list(range(1, n + 1))
    if data_dir is not None:
        from maskx.data.coco import read_json

        files = {im["id"]: im["file_name"] for im in read_json(Path(data_dir) / "val" / "annotations.json")["images"]}
        return [(i, np.asarray(Image.open(Path(data_dir) / "val" / "images" / files[i]).convert("RGB"))) for i in image_ids]
    return [(i, as_stored(render3k(1, i - 1, SAMPLE_SIZE)[0])) for i in image_ids]


def write_examples(out="models/maskx-3k", image_ids: Optional[list] = None, data_dir=None) -> Path:
    """``out/examples.json``: the model's instances (score floor 0, as the app asks) on the app's
    sample images (``image_ids``: default those the current file names, else the first 8), keyed by its
    weights' SHA-256 (``maskx.instances.write_saved``); ``made_with.image_ids`` tells the app which."""
    from maskx.instances import write_saved
    from maskx.predictor import load

    out = resolve(out)
    rule = SAMPLE_RULE  # how the ids were picked: by that rule, unless taken from a file that named none
    if image_ids is None:
        image_ids, rule = saved_samples(out)
        rule = rule or f"the first {len(image_ids)} val images (the examples before named none)"
    predictor = load(out, roi_align_forward=APP_ROI_ALIGN_FORWARD)
    images = [(i, rgb, predictor.predict(rgb, score_thresh=0.0)) for i, rgb in example_images(image_ids, data_dir)]
    from maskx.data.synthetic3k import GENERATOR_VERSION

    made_with = {"images": f"val images {list(image_ids)} of the 3000-class world version {GENERATOR_VERSION} "
                           f"(as their files decode; rendered: as_stored(render3k(1, id - 1, {SAMPLE_SIZE})))",
                 "image_ids": [int(i) for i in image_ids], "rule": rule, "score_thresh": 0.0,
                 "roi_align_forward": APP_ROI_ALIGN_FORWARD, "torch": torch.__version__,
                 "torch_threads": torch.get_num_threads(), "iteration": predictor.meta.get("iteration")}
    return write_saved(out / "examples.json", predictor.meta["sha256"], images, made_with)


def write_projections(out="models/maskx-3k") -> Path:
    """``out/projections.npz``: per input of T and for w_seg, the classes' UMAP layout and nearest set-A
    classes, keyed by the weights' SHA-256 (``maskx_app.projection.build_projections``), so the app's
    Embeddings page opens without computing them (a few minutes for 3000 classes)."""
    from maskx_app.projection import build_projections

    return build_projections(resolve(out))


# What a reproduction may change without changing the model: times and the paths it was given
# (the checkpoint's training data file and, below, the training folder it was exported from and the
# detector folder its config names).
VOLATILE = {"eval.json": ("seconds_this_call", "eval_seconds", "checkpoint", "trained_on_cpu"),
            "ckpt_*.json": ("data",)}


def compare_shipped(out, reference="models/maskx-3k") -> dict:
    """Whether ``out`` (written by a fresh ``ship``) holds the same model as ``reference``: every file of
    either folder, weights byte for byte, JSON files equal but for ``VOLATILE`` fields and the training
    folder the export names (``exported_from.run``). ``{"identical": bool, "files": {name: verdict}}``."""
    out, ref = Path(out), resolve(reference)
    files = {}
    for name in sorted({p.name for d in (out, ref) if d.is_dir() for p in d.iterdir() if p.is_file()}):
        a, b = out / name, ref / name
        if not (a.is_file() and b.is_file()):
            files[name] = f"only in {a.parent if a.is_file() else b.parent}"
        elif name.endswith(".json"):
            da, db = (_comparable(name, json.loads(f.read_text())) for f in (a, b))
            diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
            files[name] = "same" if not diff else "differs in " + ", ".join(diff)
        else:
            files[name] = "same" if a.read_bytes() == b.read_bytes() else "differs"
    return {"identical": bool(files) and all(v == "same" for v in files.values()), "files": files}


def _comparable(name: str, data: dict) -> dict:
    drop = VOLATILE.get("ckpt_*.json" if name.startswith("ckpt_") else name, ())
    data = {k: v for k, v in data.items() if k not in drop}
    if isinstance(data.get("exported_from"), dict):
        data["exported_from"] = {k: v for k, v in data["exported_from"].items() if k != "run"}
    if isinstance(data.get("config"), dict):  # the stage-wise mask run names its detector's folder
        config = data["config"]
        try:  # a field added since, at its default, leaves the config the same
            config = Config.from_json(config).to_json()
        except ConfigError:
            pass
        data["config"] = {k: v for k, v in config.items() if k != "detector"}
    return data


def _headline(m: dict) -> dict:
    return {s: {k: m[s][k] for k in ("bbox_AP", "segm_AP", "segm_AP50")} for s in ("A", "B")}
