"""The transfer diagnostics (``maskx.diagnostics``) of one trained detector: a JSON record and its table.

    python scripts/diagnostics.py --detector runs/study/efficientnet_lite0__detector__all__s0 \\
        --data data/synth-default --split voc2nonvoc --seed 0 --out results/diagnostics/v3_s0_voc2nonvoc.json

Trains (or reuses, when their folders hold a finished run) the stage-wise mask heads the measures need
on the frozen detector, with the study scale's settings (``maskx_study.plan``): the oracle and the
class-agnostic head with every class's masks, the class-agnostic head and T(cls+box) with set A's.
Then measures, on the ground-truth boxes of the first val images: the similarity index and the linear
probe of each embedding, T's spread, and what knowing the class is worth on B.

``--table A.json B.json ...`` prints the markdown table of records already written.

``--embeddings-only --out RECORD.json`` adds to a record already written what a notebook draws beside
its table (``maskx.diagnostics.embedding_views``): the class list, a UMAP layout of the classes per
embedding and each set-B class's nearest set-A classes, from its detector's class weights alone (no
training, no RoI cache, no images; seconds). With ``--per-class-iou`` it also measures the heads' mask
IoU per class on the record's val images (the heads' runs must be there; minutes). A full run writes both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

MASK_RUNS = (("oracle", "all"), ("agnostic_all", "all"), ("agnostic", None), ("transfer_clsbox_2lrelu", None))


def train_mask_heads(detector: Path, data: Path, split: str, seed: int, runs: Path, scale_name: str,
                     split_seed: int) -> dict:
    """{preset: run folder} of the stage-wise runs on ``detector``, trained here where not finished."""
    from maskx.checkpoint import list_checkpoints
    from maskx.train import run_training
    from maskx_study.plan import SCALES, Run

    scale = SCALES[scale_name]
    out = {}
    for preset, fixed_split in MASK_RUNS:
        run = Run(preset, fixed_split or split, seed, scale.backbone)
        own_split = split_seed != seed and not fixed_split  # the random split is drawn with its own seed
        folder = runs / (run.key + (f"__split-seed{split_seed}" if own_split else ""))
        if not (folder / "done.json").is_file():
            cfg = run.config(scale, detector)
            if own_split:
                cfg = cfg.replace(split=str(_split_file(data, split, split_seed, folder)))
            print(f"training {run.key} ({cfg.iters} iterations on cached RoIs)", flush=True)
            run_training(cfg, data / "train", folder, resume=bool(list_checkpoints(folder)), progress=False)
        out[preset] = folder
    return out


def _split_file(data: Path, split: str, split_seed: int, folder: Path) -> Path:
    """``split`` drawn with ``split_seed``, written as a JSON split file (what ``--split FILE`` reads)."""
    from maskx.atomic import write_json_atomic
    from maskx.data.coco import read_json
    from maskx.data.splits import info_split_args, resolve_split

    train = read_json(data / "train" / "annotations.json")
    resolved = resolve_split(split, train["categories"], seed=split_seed, **info_split_args(train.get("info")))
    path = folder.parent / f"{folder.name}.split.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(resolved.to_json(), path)
    return path


def measure(detector: Path, data: Path, split_name: str, seed: int, runs: Path, scale_name: str,
            images: int, split_seed: int, reuse_box_ap: Optional[dict] = None) -> dict:
    import maskx
    from maskx.data.coco import CocoDataset
    from maskx.data.splits import info_split_args, resolve_split
    from maskx.data.embedded import GENERATOR_VERSION
    from maskx.diagnostics import diagnose

    t0 = time.perf_counter()
    folders = train_mask_heads(detector, data, split_name, seed, runs, scale_name, split_seed)
    val = CocoDataset.from_dir(data / "val")
    split = resolve_split(split_name, val.data["categories"], seed=split_seed,
                          **info_split_args(val.data.get("info")))
    det = maskx.load(detector)
    box = reuse_box_ap if reuse_box_ap is not None else _box_ap(det, val, split)
    load = {k: maskx.load(v).model for k, v in folders.items()}
    record = diagnose(det.model, load["oracle"], load["agnostic"], val, split,
                      agnostic_all=load["agnostic_all"], transfer=load["transfer_clsbox_2lrelu"], images=images,
                      seed=seed)
    record.update(views(det, val.data["categories"], split, seed))
    info = val.data.get("info", {})
    return {"generator_version": info.get("generator_version", GENERATOR_VERSION), "split": split_name,
            "seed": seed, "detector": str(detector), "runs": {k: str(v) for k, v in folders.items()},
            "split_seed": split_seed, "detector_box_ap": box, "seconds": round(time.perf_counter() - t0, 1), **record}


UMAP_NOTE = "UMAP (maskx_app.projection.UMAP_PARAMS: random_state 0, 15 neighbours, cosine) of rows centred on their mean"


def umap_layout(x):
    """The 2-d layout the records store: the app's UMAP (one random_state for every embedding)."""
    from maskx_app.projection import umap_2d

    return umap_2d(x)


def views(predictor, categories: list, split, seed: int, project=umap_layout) -> dict:
    """``maskx.diagnostics.embedding_views`` of a loaded detector (``maskx.load``) whose classes are
    ``categories``' (COCO categories, any order), with set A of ``split``, plus how it was projected."""
    import numpy as np

    from maskx import diagnostics as dg
    from maskx.checkpoint import check_classes

    cats = sorted(categories, key=lambda c: c["id"])  # label order (maskx.data.categories)
    check_classes(predictor.meta, [c["name"] for c in cats], [c["id"] for c in cats], "the diagnostics' embedding views")
    a_ids = set(split.a_ids)
    in_a = np.array([c["id"] in a_ids for c in cats])
    method = UMAP_NOTE if project is umap_layout else getattr(project, "__name__", str(project))
    if project is umap_layout:
        try:  # umap-learn comes with the app extra; without it the record has no layouts, and says so
            import umap  # noqa: F401
        except ImportError:
            project, method = None, "none: umap-learn is not installed (pip install maskx[app])"
    out = dg.embedding_views(predictor.model, cats, in_a, seed=seed, project=project)
    out["projection_method"] = method
    return out


def _data_of(detector, data: Optional[Path]) -> tuple[Path, Optional[Path]]:
    """(annotations holding the detector's categories, the val folder or None): ``data`` when given (a
    folder with val/ and train/, or one dataset folder, read as the val images), else from the
    detector's checkpoint, which records its training annotations (val/ beside its train/)."""
    from maskx.checkpoint import find_checkpoint

    if data is not None:
        val = next((d for d in (Path(data) / "val", Path(data)) if (d / "annotations.json").is_file()), None)
        cats = val / "annotations.json" if val is not None else Path(data) / "train" / "annotations.json"
        if not cats.is_file():
            raise SystemExit(f"{data}: no val/, train/ or annotations.json with the detector's categories")
        return cats, val
    meta, _ = find_checkpoint(detector)
    train = Path(meta.get("data") or "")
    if not train.is_file():
        raise SystemExit(f"{detector}: its training annotations ({meta.get('data')!r}) are not here; pass --data")
    val = train.parent.parent / "val"
    return train, val if (val / "annotations.json").is_file() else None


def embeddings_only(out: Path, detector: Optional[Path] = None, data: Optional[Path] = None,
                    per_class_iou: bool = False, project=umap_layout) -> dict:
    """Add ``views`` (and, with ``per_class_iou``, the heads' ``per_class_iou_on_gt_boxes``) to the record
    ``out`` made before, in place; nothing else of it changes. The detector, split, split seed, seed,
    head runs and image count are the record's (``detector``/``data`` override where it is looked for)."""
    import maskx
    from maskx.atomic import write_json_atomic
    from maskx.data.coco import read_json
    from maskx.data.splits import info_split_args, resolve_split

    t0 = time.perf_counter()
    record = json.loads(Path(out).read_text())
    detector = Path(detector or record["detector"])
    cats_file, val_dir = _data_of(detector, data)
    ann = read_json(cats_file)
    seed = record.get("seed", 0)
    split = resolve_split(record["split"], ann["categories"], seed=record.get("split_seed", seed),
                          **info_split_args(ann.get("info")))
    if "A_classes" in record and len(split.a_ids) != record["A_classes"]:
        raise SystemExit(f"{out}: the record has {record['A_classes']} A classes, the split drawn here "
                         f"{len(split.a_ids)}: not the record's split")
    det = maskx.load(detector)
    record.update(views(det, ann["categories"], split, seed, project))
    if per_class_iou:
        record["per_class_iou_on_gt_boxes"] = _per_class_iou(det, record, val_dir, split)
    record["views_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(record, Path(out))
    return record


def _per_class_iou(det, record: dict, val_dir: Optional[Path], split) -> dict:
    """{head: {category id (str): mean mask IoU}} of the record's head runs on the ground-truth boxes of
    its first ``images`` val images, as a full run measures them."""
    import maskx
    from maskx import gt_box_eval
    from maskx.data.coco import CocoDataset

    if val_dir is None:
        raise SystemExit("--per-class-iou needs the val images: pass --data (a folder with val/)")
    val = CocoDataset.from_dir(val_dir)
    inputs = gt_box_eval.gt_box_inputs(det.model, val, record.get("images", 100))
    names = {"oracle": "oracle", "agnostic_all": "agnostic_all", "agnostic": "agnostic",
             "transfer_clsbox_2lrelu": "transfer"}  # run presets -> the record's head names
    out = {}
    for preset, folder in record.get("runs", {}).items():
        s = gt_box_eval.summarize(gt_box_eval.instance_ious(maskx.load(folder).model, inputs), split)
        out[names.get(preset, preset)] = {str(c): v for c, v in s["per_class"].items()}
    return out


def _box_ap(predictor, val, split) -> dict:
    """The detector's box AP on the val split: over every class (the mean of per-class AP), on A and on B."""
    import statistics

    from maskx.engine import evaluate_model

    metrics, _ = evaluate_model(predictor, val, split, progress=False)
    per_class = [v["bbox_AP"] for v in metrics["per_class"].values() if v.get("bbox_AP") is not None]
    return {"all": round(statistics.fmean(per_class), 2) if per_class else None,
            "A": metrics["A"]["bbox_AP"], "B": metrics["B"]["bbox_AP"]}


def box_ap_of_result(path: Path, split: str) -> dict:
    """``_box_ap``'s numbers read from a study detector's result (``results/<detector run>.json``),
    which evaluated the same detector on the same val split: no second evaluation."""
    import statistics

    m = json.loads(Path(path).read_text())["metrics"][split]
    per_class = [v["bbox_AP"] for v in m["per_class"].values() if v.get("bbox_AP") is not None]
    return {"all": round(statistics.fmean(per_class), 2) if per_class else None,
            "A": m["A"]["bbox_AP"], "B": m["B"]["bbox_AP"]}


def measure_model(model_path: str, categories: str, kinds=("cls", "box", "cls+box", "randn")) -> dict:
    """Measures (a) and (d) of a trained model alone (no heads to train): the similarity index of its
    detection weights and T's spread. ``categories``: ``3k`` (the 3000-class world's) or a COCO
    annotations file holding the model's categories."""
    import numpy as np

    import maskx
    from maskx import diagnostics as dg

    if categories in ("3k", "3k-v1", "3k-v2"):  # 3k: the generator version the shipped model is trained on
        from maskx.data.synthetic3k import GENERATOR_VERSION, categories3k

        cats = categories3k(GENERATOR_VERSION if categories == "3k" else int(categories[-1]))
    else:
        cats = json.loads(Path(categories).read_text())["categories"]
    p = maskx.load(model_path)
    by_id = {c["id"]: c for c in cats}
    attrs, names = dg.attribute_matrix(dg.category_attributes([by_id[i] for i in p.category_ids]))
    in_b = np.array([i not in p.set_a for i in p.category_ids])
    out = {"model": model_path, "classes": len(p.category_ids), "A_classes": int((~in_b).sum()),
           "attribute_kinds": sorted({a.split(":")[0] for a in names}), "embeddings": {}}
    for kind in kinds:
        emb = dg.class_embedding_matrix(p.model, p.class_names, kind)
        out["embeddings"][kind] = dg.similarity_indices(emb, attrs, in_b)
    out["spread"] = dg.transfer_spread(dg.mask_weight_rows(p.model)[:, :-1])
    return out


def main(argv=None) -> int:
    from maskx_study.report import diagnostics_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", type=Path, help="a trained detector run (stage 'detector')")
    ap.add_argument("--data", type=Path, help="folder with train/ and val/ (the detector's data)")
    ap.add_argument("--split", default="voc2nonvoc")
    ap.add_argument("--seed", type=int, default=0, help="the mask runs' seed")
    ap.add_argument("--split-seed", type=int, default=None, help="seed of a random split (default: --seed); "
                    "a design split uses one the study never uses")
    ap.add_argument("--runs", type=Path, default=None, help="where the mask heads train (default: beside the detector)")
    ap.add_argument("--scale", default="study", help="maskx_study.plan.SCALES entry giving the mask runs' settings")
    ap.add_argument("--images", type=int, default=100, help="val images whose ground-truth boxes are measured")
    ap.add_argument("--out", type=Path, help="the JSON record (a .md table is written beside it)")
    ap.add_argument("--box-ap-from", type=Path, help="the detector's study result (results/<detector run>.json): "
                    "its box AP instead of evaluating the detector again")
    ap.add_argument("--table", nargs="+", type=Path, help="print the table of these records and exit")
    ap.add_argument("--model", help="measure a trained model alone (similarity index, spread): a run, "
                    "a checkpoint or a shipped model's name; with --categories")
    ap.add_argument("--categories", default="3k", help="with --model: 3k (the shipped world), 3k-v1, 3k-v2 or a "
                    "COCO annotations file")
    ap.add_argument("--embeddings-only", action="store_true", help="add the class list, UMAP layouts and nearest "
                    "A classes to the existing --out record, from its detector's class weights (seconds; "
                    "--detector and --data only where the record's detector or its data moved)")
    ap.add_argument("--per-class-iou", action="store_true", help="with --embeddings-only: also the heads' mask "
                    "IoU per class on the record's val images (its head runs must be there; minutes)")
    args = ap.parse_args(argv)
    if args.embeddings_only:
        if not (args.out and args.out.is_file()):
            ap.error("--embeddings-only needs --out: a record written before")
        record = embeddings_only(args.out, args.detector, args.data, args.per_class_iou)
        print(f"{args.out}: views of {len(record['nearest_A'])} embeddings"
              + (", per-class IoU" if args.per_class_iou else "") + f" in {record['views_seconds']} s")
        return 0
    if args.model:
        record = measure_model(args.model, args.categories)
        if args.out:
            from maskx.atomic import write_json_atomic

            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(record, args.out)
        print(json.dumps(record, indent=1))
        return 0
    if args.table:
        print(diagnostics_table([json.loads(p.read_text()) for p in args.table]))
        return 0
    if not (args.detector and args.data and args.out):
        ap.error("--detector, --data and --out are required (or --table)")
    from maskx.atomic import write_json_atomic

    reuse = box_ap_of_result(args.box_ap_from, args.split) if args.box_ap_from else None
    if reuse is None and args.out.is_file():  # measured before on this detector: its box AP (the slow part) is kept
        old = json.loads(args.out.read_text())
        if old.get("detector") == str(args.detector) and old.get("detector_box_ap"):
            reuse = old["detector_box_ap"]
    record = measure(args.detector, args.data, args.split, args.seed, args.runs or args.detector.parent,
                     args.scale, args.images, args.seed if args.split_seed is None else args.split_seed, reuse)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, args.out)
    args.out.with_suffix(".md").write_text(diagnostics_table([record]) + "\n")
    print(diagnostics_table([record]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
