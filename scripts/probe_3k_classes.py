"""Where the 3000-class detector's naming goes wrong: which factor of a class it confuses (a data-design check).

Every ground-truth box of the 3000-class val split is classified by the model's box head (the
background column ignored), and the top-1 class is compared with the true one factor by factor:
each factor of its name (``factors``: version 2's body, pattern, hue and proportion; version 1's family,
edge and proportion words), and whether it named a set-A class.
Detection is taken out, so this separates "cannot tell siblings apart" from "does not find objects".
``--logit-adjust TAU`` first subtracts TAU * log(training frequency) from each class's logit (Menon
et al. 2021, "Long-tail learning via logit adjustment"; TAU = 1 is their Bayes-optimal choice for the
class-balanced error): does the training prior, rather than the features, pull set-B objects to set A?

    python scripts/probe_3k_classes.py --model maskx-3k --data data/synth3k --images 300 [--logit-adjust 1]
"""
from __future__ import annotations

import argparse
import collections
import json

import torch

def factors(category: dict) -> dict:
    """A category's factors: its ``key:value`` attributes by key (version 2: body, pattern, hue,
    proportion, plain when absent), bare attributes as ``mod`` (version 1: edge or proportion words),
    and its supercategory (version 1: the family; version 2: the body)."""
    out = {"supercategory": category.get("supercategory", "")}
    for a in category.get("attributes", []):
        key, _, value = a.partition(":") if ":" in a else ("mod", "", a)
        out[key] = out[key] + " " + value if key in out and key == "mod" else value
    out.setdefault("proportion", "plain")
    return out


def log_prior(data: str, categories) -> torch.Tensor:
    """[K + 1] log training frequency of each label (background 0: 0), from ``data``/train's
    annotations; a class with no training instance counts as 1."""
    from maskx.data.coco import read_json

    counts = collections.Counter(a["category_id"] for a in read_json(f"{data}/train/annotations.json")["annotations"])
    n = torch.tensor([1.0] + [max(1, counts[categories.category_id(k)]) for k in range(1, len(categories.ids) + 1)])
    out = (n / n[1:].sum()).log()
    out[0] = 0.0
    return out


@torch.inference_mode()
def probe(model_path: str, data: str, images: int, logit_adjust: float = 0.0) -> dict:
    from maskx.gt_box_eval import gt_box_features
    from maskx.predictor import load
    from maskx_release.ship import val_split

    model = load(model_path).model.eval()
    val, split = val_split(data, images)
    cats = {c["id"]: c for c in val.data["categories"]}
    fac = {cid: factors(c) for cid, c in cats.items()}
    hits = collections.Counter()
    adjust = logit_adjust * log_prior(data, val.categories) if logit_adjust else 0.0
    for i in range(len(val)):
        image, t = val[i]
        if len(t["boxes"]) == 0:
            continue
        x = model.roi_heads.box_roi_pool(*gt_box_features(model, image, t["boxes"]))
        logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(x))
        logits = logits - adjust
        logits[:, 0] = -float("inf")
        for gt, top in zip(t["labels"].tolist(), logits.argmax(1).tolist()):
            g, p = (val.categories.category_id(k) for k in (gt, top))
            s = split.set_of(g)
            hits[s, "n"] += 1
            hits[s, "exact"] += g == p
            hits[s, "predicted_in_A"] += split.set_of(p) == "A"
            for key, value in fac[g].items():
                hits[s, key] += fac[p].get(key) == value
    keys = sorted({k for _, k in hits} - {"n"})
    return {s: {"instances": hits[s, "n"], **{k: round(hits[s, k] / max(1, hits[s, "n"]), 3) for k in keys}}
            for s in ("A", "B")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="maskx-3k")
    ap.add_argument("--data", default="data/synth3k", help="3000-class data folder (python -m maskx data synth3k)")
    ap.add_argument("--images", type=int, default=300, help="first N val images")
    ap.add_argument("--logit-adjust", type=float, default=0.0, metavar="TAU",
                    help="subtract TAU * log(training class frequency) from the logits first")
    args = ap.parse_args()
    print(json.dumps(probe(args.model, args.data, args.images, args.logit_adjust), indent=1))


if __name__ == "__main__":
    main()
