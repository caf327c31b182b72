"""The app's default score threshold for a 3000-class model, chosen on design data: for each threshold,
how many of the app's sample images (``maskx_app.samples.pick_sample_ids``) and of the first 100 val
images show a set-B object named right with a mask of IoU >= 0.5 (``maskx_release.ship.shows_named_b``,
what ``eval.json``'s ``app_samples`` counts), and how many set-A / set-B / wrongly named instances a page
draws per image at that threshold:

    python scripts/app_threshold_3k.py RUN_DIR [--data data/design3k-v2b] [--train data/design3k-v2c/train]
        [--nms IOU]   # what a page would draw after class-agnostic NMS (torchvision's nms over every class's boxes)

Predicts each image once (score floor 0.05, as the app does: sparse RoIAlign) and prints one JSON line per
threshold (docs/model-3k-design.md). One thread.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", default="data/design3k-v2b", help="a folder with val/ (generate3k's layout)")
    ap.add_argument("--train", default="data/design3k-v2c/train", help="the training part (for the samples' rule)")
    ap.add_argument("--first", type=int, default=100)
    ap.add_argument("--nms", type=float, help="class-agnostic NMS at this box IoU over the instances kept at each threshold")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from PIL import Image
    from maskx.data.coco import read_json
    from maskx.predictor import load
    from maskx_app.samples import pick_sample_ids, training_counts
    from maskx_release.ship import APP_IOU, APP_ROI_ALIGN_FORWARD, set_b_masks, shows_named_b

    val = read_json(Path(args.data) / "val" / "annotations.json")
    a_ids = set(val["info"]["set_A_category_ids"])
    counts = training_counts(read_json(Path(args.train) / "annotations.json")["annotations"])
    samples = pick_sample_ids(val, counts, a_ids)
    images = {im["id"]: im for im in val["images"]}
    firsts = sorted(images)[:args.first]
    by_image: dict = {}
    for a in val["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    predictor = load(args.run, roi_align_forward=APP_ROI_ALIGN_FORWARD)
    seen = {}
    for image_id in sorted(set(firsts) | set(samples)):
        rgb = np.asarray(Image.open(Path(args.data) / "val" / "images" / images[image_id]["file_name"]).convert("RGB"))
        gt = set_b_masks(by_image.get(image_id, []), a_ids)
        present = {a["category_id"] for a in by_image.get(image_id, [])}
        seen[image_id] = (predictor.predict(rgb, score_thresh=0.05), gt, present)
    def kept(instances: list, t: float) -> list:
        out = [x for x in instances if x.score >= t]
        if args.nms is None or not out:
            return out
        from torchvision.ops import nms

        keep = nms(torch.tensor([list(x.box) for x in out], dtype=torch.float32),
                   torch.tensor([x.score for x in out]), args.nms)
        return [out[k] for k in sorted(keep.tolist())]

    for t in THRESHOLDS:
        shown = {i: shows_named_b(kept(inst, t), gt, a_ids, t) for i, (inst, gt, _) in seen.items()}
        drawn = [kept(seen[i][0], t) for i in firsts]
        print(json.dumps({"score": t, "iou": APP_IOU, "nms": args.nms, "samples_with_named_B": sum(shown[i] for i in samples),
                          f"first_{len(firsts)}_with_named_B": sum(shown[i] for i in firsts),
                          "per_image": {"A": round(np.mean([sum(x.category_id in a_ids for x in d) for d in drawn]), 2),
                                        "B": round(np.mean([sum(x.category_id not in a_ids for x in d) for d in drawn]), 2),
                                        "class_not_in_image": round(np.mean([sum(x.category_id not in seen[i][2] for x in d)
                                                                             for i, d in zip(firsts, drawn)]), 2)}}),
              flush=True)


if __name__ == "__main__":
    main()
