"""Where the 3000-class detector's naming goes wrong (issue 5's data-design question).

Every ground-truth box of the 3000-class val split is classified by the model's box head (the
background column ignored), and the top-1 class is compared with the true one factor by factor:
family (look), base shape, edge attribute, proportion attribute, and whether it named a set-A class.
Detection is taken out, so this separates "cannot tell siblings apart" from "does not find objects".

    python scripts/probe_3k_classes.py --model maskx-3k --data data/synth3k --images 300
"""
from __future__ import annotations

import argparse
import collections
import json

import torch

FACTORS = ("exact", "family", "base", "edge", "proportion", "predicted_in_A")


@torch.inference_mode()
def probe(model_path: str, data: str, images: int) -> dict:
    from maskx.data.vocab3k import classes
    from maskx.gt_box_eval import gt_box_features
    from maskx.predictor import load
    from maskx.ship import val_split

    model = load(model_path).model.eval()
    val, _ = val_split(data, images)
    by_id = {c.category_id: c for c in classes()}
    hits = collections.Counter()
    for i in range(len(val)):
        image, t = val[i]
        x = model.roi_heads.box_roi_pool(*gt_box_features(model, image, t["boxes"]))
        logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(x))
        logits[:, 0] = -float("inf")
        for gt, top in zip(t["labels"].tolist(), logits.argmax(1).tolist()):
            g, p = (by_id[val.categories.category_id(k)] for k in (gt, top))
            s = "A" if g.set_a else "B"
            same_base = (g.family, g.base) == (p.family, p.base)
            for name, ok in (("n", True), ("exact", g.index == p.index), ("family", g.family == p.family),
                             ("base", same_base), ("edge", g.edge == p.edge), ("proportion", g.proportion == p.proportion),
                             ("predicted_in_A", p.set_a)):
                hits[s, name] += ok
    return {s: {"instances": hits[s, "n"], **{f: round(hits[s, f] / max(1, hits[s, "n"]), 3) for f in FACTORS}}
            for s in ("A", "B")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="maskx-3k")
    ap.add_argument("--data", default="data/synth3k", help="3000-class data folder (python -m maskx data synth3k)")
    ap.add_argument("--images", type=int, default=300, help="first N val images")
    args = ap.parse_args()
    print(json.dumps(probe(args.model, args.data, args.images), indent=1))


if __name__ == "__main__":
    main()
