"""The study's evaluation of a trained run: AP on A and B (bbox, segm, per class) and mask IoU on
ground-truth boxes. Stage-wise runs share their frozen detector's val detections and GT-box features
(computed once per detector in each process); end-to-end runs run their full model. A mixin of
``maskx_study.runner.Study``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from maskx.atomic import write_json_atomic
from maskx.config import INFERENCE_FIELDS, Config
from maskx_study.plan import Run

STUDY_GT_BOX_IMAGES = 100  # val images of the masks-on-ground-truth-boxes measure (about 280 instances)
# val images whose ground-truth-box masks each result keeps (``gt_box_eval.instance_masks``, about 10 KB):
# what the notebooks' and the app's mask grids draw, on a fresh clone too
MASK_GRID_IMAGES = 16
# what a result's numbers were measured by; a result recording an older one is measured again
# (``Study.stale_reason``). 2: ``maskx.load`` feeds an efficientnet_lite0 model the input normalisation
# its weights were trained with (version 1 gave it ImageNet's mean/std, docs/model-3k-design.md §13).
EVAL_VERSION = 2


@dataclass(frozen=True)
class _DetectorEval:
    """What the stage-wise runs on one frozen detector share at evaluation: its val detections
    and its features of the val GT boxes, keyed by detector folder and inference settings."""
    key: str
    cache: "DetectionCache"
    gt_inputs: object  # gt_box_eval.gt_box_inputs


class StudyEvaluation:
    """``Study``'s evaluation methods; they use its ``scale``, ``progress``, ``result_path``, ``run_dir``
    and two caches (``_train_annotations``, ``_detections``)."""

    def masks_per_a_class(self, run: Run) -> Optional[float]:
        """Mask-labelled training instances per set-A class (Figure 3's x axis)."""
        from maskx.data.coco import read_json
        from maskx.data.splits import info_split_args, resolve_split

        if self._train_annotations is None:
            self._train_annotations = read_json(Path(self.scale.data) / "train" / "annotations.json")
        data = self._train_annotations
        if run.preset == "detector":
            return None
        split = resolve_split(run.split, data["categories"], seed=run.seed, require_b=False,
                              **info_split_args(data.get("info")))
        a = set(split.a_ids)
        return round(sum(x["category_id"] in a for x in data["annotations"]) / len(a), 2)

    def evaluate_run(self, run: Run, config: Config, out: Path, det_dir: Path) -> tuple[dict, str, list, list, Optional[dict]]:
        """(metrics per direction, how it was evaluated, predictions, val ids, the masks of the ground-truth
        boxes of the first ``MASK_GRID_IMAGES`` val images: ``{"images", "instances"}``; None for a detector)."""
        from maskx import gt_box_eval
        from maskx_study.detection_cache import DetectionCache
        from maskx.data.coco import CocoDataset
        from maskx.evaluate import evaluate_predictions
        from maskx.predictor import load

        val = CocoDataset.from_dir(Path(self.scale.data) / "val")
        predictor = load(out, inference=config)
        skip = self.scale.eval_skip_absent_masks and config.stage != "detector"
        present: Optional[dict[int, set]] = None
        gt_inputs = None
        if skip:  # image id -> the categories with ground truth there
            present = {}
            for a in val.data["annotations"]:
                present.setdefault(a["image_id"], set()).add(a["category_id"])
        if config.stage == "e2e":
            from maskx.engine import predict_dataset

            preds = predict_dataset(predictor, val, progress=self.progress, present=present)  # scored below
            how = "full model" + (", masks of classes present in their image" if skip else "")
        else:
            key = f"{det_dir} {[getattr(config, f) for f in INFERENCE_FIELDS]}"
            if self._detections is None or self._detections.key != key:
                self._detections = None  # one detector's cache at a time (about 1-2 GB)
                detector = load(det_dir, inference=config).model
                self._detections = _DetectorEval(key, DetectionCache(detector, val, progress=self.progress),
                                                 gt_box_eval.gt_box_inputs(detector, val, STUDY_GT_BOX_IMAGES))
            cache, gt_inputs = self._detections.cache, self._detections.gt_inputs
            if config.stage == "detector":
                preds, how = cache.predict_boxes(predictor.model, predictor), "cached detections"
            else:
                preds = cache.predict_masks(predictor, source=str(out), present=present)
                how = "mask head on cached detections" + (" of classes present in their image" if skip else "")
        metrics = {}
        splits = {name: _val_split(val, name, run.seed) for name in run.eval_splits}
        for name, split in splits.items():
            metrics[name] = evaluate_predictions(val.data, preds, split)
            if skip:  # the masks of detections of absent classes were not computed
                for s in ("A", "B"):
                    metrics[name][s].update({f"segm_{k}": None for k in ("APs", "APm", "APl")})
        grid = None
        if config.stage != "detector":  # stage-wise: the shared GT-box features; end-to-end: its own
            if gt_inputs is None:
                gt_inputs = gt_box_eval.gt_box_inputs(predictor.model, val, STUDY_GT_BOX_IMAGES)
            ious = gt_box_eval.masks_on_gt_boxes(predictor, val, splits, STUDY_GT_BOX_IMAGES, inputs=gt_inputs)
            for name in splits:
                metrics[name]["masks_on_gt_boxes"] = ious[name]
            grid = {"images": MASK_GRID_IMAGES,
                    "instances": gt_box_eval.instance_masks(predictor.model, gt_inputs, MASK_GRID_IMAGES)}
        return metrics, how, preds, list(val.ids), grid

    def add_gt_box_ious(self, runs: list[Run]) -> list[Path]:
        """Results of ``runs`` that lack ``masks_on_gt_boxes`` get it (evaluation only, no training);
        returns the result files rewritten."""
        from maskx import gt_box_eval
        from maskx.data.coco import CocoDataset
        from maskx.predictor import load

        done, val = [], None
        for run in runs:
            path, out = self.result_path(run), self.run_dir(run)
            if run.preset == "detector" or not path.is_file() or not (out / "done.json").is_file():
                continue
            record = json.loads(path.read_text())
            if all("masks_on_gt_boxes" in m for m in record["metrics"].values()):
                continue
            val = val or CocoDataset.from_dir(Path(self.scale.data) / "val")
            predictor = load(out)
            ious = gt_box_eval.masks_on_gt_boxes(
                predictor, val, {name: _val_split(val, name, run.seed) for name in record["metrics"]}, STUDY_GT_BOX_IMAGES)
            for name, m in record["metrics"].items():
                m["masks_on_gt_boxes"] = ious[name]
            write_json_atomic(record, path)
            done.append(path)
        return done


def _val_split(val, name: str, seed: int):
    """The split ``name`` of the val set's categories (voc-like ids from its ``info``)."""
    from maskx.data.splits import info_split_args, resolve_split

    return resolve_split(name, val.data["categories"], seed=seed, **info_split_args(val.data.get("info")))
