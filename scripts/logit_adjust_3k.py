"""Post-hoc logit adjustment (Menon et al. 2021) of a 3000-class box head, measured on naming: each
class's logit minus tau * log(1 + its training instances), on the ground-truth boxes of the first
images of a design val split (background left out, as ``maskx.gt_box_eval.naming_on_gt_boxes``):

    python scripts/logit_adjust_3k.py RUN/ckpt_0002250.json [--data data/design3k-v2b] [--images 300]

Prints one JSON line per tau: top-1 / top-5 on A and on B (docs/model-3k-design.md §14). One thread.
"""
from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="data/design3k-v2b", help="a folder with train/ and val/ (generate3k's layout)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--tau", default="0,0.1,0.2,0.3,0.5,0.75,1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import maskx
    from maskx.data.coco import read_json
    from maskx.gt_box_eval import gt_box_features
    from maskx_app.samples import training_counts
    from maskx_release.ship import val_split

    val, split = val_split(args.data, args.images)
    model = maskx.load(args.checkpoint).model.eval()
    rh = model.roi_heads
    logits, labels = [], []
    with torch.no_grad():
        for i in range(len(val)):
            image, t = val[i]
            if len(t["boxes"]):
                logits.append(rh.box_predictor(rh.box_head(rh.box_roi_pool(*gt_box_features(model, image, t["boxes"]))))[0])
                labels.append(t["labels"])
    logits, labels = torch.cat(logits), torch.cat(labels)
    logits[:, 0] = -float("inf")
    counts = training_counts(read_json(f"{args.data}/train/annotations.json")["annotations"])
    log_prior = torch.tensor([0.0] + [float(counts.get(val.categories.category_id(k), 0)) for k in range(1, logits.shape[1])]).log1p()
    in_b = torch.tensor([split.set_of(val.categories.category_id(int(y))) == "B" for y in labels])
    for tau in (float(t) for t in args.tau.split(",")):
        top = (logits - tau * log_prior).topk(5, dim=1).indices
        top1, top5 = top[:, 0] == labels, (top == labels[:, None]).any(1)
        print(json.dumps({"tau": tau, **{s: {"top1": round(100 * top1[m].float().mean().item(), 1),
                                              "top5": round(100 * top5[m].float().mean().item(), 1), "instances": int(m.sum())}
                                         for s, m in (("A", ~in_b), ("B", in_b))}}), flush=True)


if __name__ == "__main__":
    main()
