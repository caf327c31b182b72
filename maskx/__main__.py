"""Command line (argparse and wiring only): ``python -m maskx COMMAND``, COMMAND one of
``data`` (``synth``, ``synth3k``: write the embedded datasets; ``vg-coco``: Visual Genome boxes with
COCO masks; ``summary``: check a COCO-format folder), ``eval`` (COCO AP on set A and set B),
``train`` (a preset, any field via ``--set``), ``predict`` (COCO results JSON), ``study``
(``plan``, ``run``, ``report``: the ablation study), ``ship`` (train, export and evaluate the
shipped 3000-class model) and ``demo`` (the embedded dataset, generated once and summarised).
It is the one library module that dispatches to the harness packages: ``study`` to
``maskx_study`` and ``ship`` to ``maskx_release``, imported only when those commands run."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_synth(args) -> dict:
    from .data.embedded import GENERATOR_VERSION, generate

    version = GENERATOR_VERSION if args.generator_version is None else args.generator_version
    return generate(args.out, args.images, seed=args.seed, image_size=args.image_size, workers=args.workers,
                    overwrite=args.overwrite, progress=not args.quiet, version=version)


def _cmd_synth3k(args) -> dict:
    from .data.coco import read_json
    from .data.synthetic3k import GENERATOR_VERSION, ensure_dataset3k, summarize3k

    version = GENERATOR_VERSION if args.generator_version is None else args.generator_version
    paths = ensure_dataset3k(args.out, args.size, workers=args.workers, progress=not args.quiet, version=version)
    return {part: {"path": str(p.parent), **summarize3k(read_json(p))} for part, p in paths.items()}


def _cmd_vg_coco(args) -> dict:
    from .atomic import atomic_write
    from .data.vg_coco import VGWithCocoMasks, coco_image_ids

    exclude = set()
    for f in args.exclude_coco_ann or []:
        exclude |= coco_image_ids(f)
    ds = VGWithCocoMasks(args.vg, args.coco_ann, num_classes=args.classes, images=args.images,
                         exclude_coco_ids=exclude, iou_thresh=args.iou, strict=args.strict)
    data = ds.to_coco(progress=not args.quiet)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(data, separators=(",", ":"))))
    return {"out": str(args.out), "images_dir": str(args.vg), **ds.summary}


def _cmd_summary(args) -> dict:
    from .data.coco import CocoDataset, load_image
    from .data.splits import info_split_args, resolve_split

    ds = CocoDataset.from_dir(args.dir, strict=args.strict)
    out = {"dataset": str(args.dir), **ds.summary}
    info = ds.data.get("info", {})
    if args.split:
        split = resolve_split(args.split, ds.data["categories"], seed=args.seed, **info_split_args(info))
        ds = CocoDataset.from_dir(args.dir, strict=args.strict, mask_category_ids=split.a_ids)
        out.update({"split": split.name, "A_classes": len(split.a_ids), "B_classes": len(split.b_ids),
                    "instances_with_mask": ds.summary["with_mask"]})
    if args.verify_images:
        for i in range(len(ds)):
            load_image(ds.image_path(i), ds.ids[i], (ds.images[ds.ids[i]]["height"], ds.images[ds.ids[i]]["width"]))
        out["images_verified"] = len(ds)
    return out


def _cmd_eval(args) -> dict:
    from .atomic import write_json_atomic
    from .evaluate import evaluate_files

    result = evaluate_files(args.gt, args.pred, args.split, seed=args.seed)
    if args.out:
        write_json_atomic(result, args.out)
    return result


def _cmd_train(args) -> dict:
    from .config import get_preset
    from .train import run_training

    config = get_preset(args.preset)
    changes = {k: v for k, v in (("split", args.split), ("seed", args.seed), ("iters", args.iters),
                                 ("image_size", args.image_size),
                                 ("detector", args.detector and str(Path(args.detector).resolve()))) if v is not None}
    config = config.replace(**changes).with_overrides(args.set or [])
    path = run_training(config, args.data, args.out, resume=args.resume, progress=not args.quiet,
                        detector_iters=args.detector_iters, stop_after=args.stop_after, images_dir=args.images)
    return {"run": str(args.out), "checkpoint": str(path), "preset": args.preset, "config": config.to_json()}


def _cmd_predict(args) -> dict:
    """Predict every image of a file or folder. An image that cannot be read is skipped with a warning
    naming it and counted (``--strict``: it stops the run); the run fails only when no image was read."""
    from tqdm import tqdm

    from .atomic import write_json_atomic
    from .data.coco import DatasetError, load_image
    from .predictor import load

    predictor = load(args.checkpoint, roi_align_forward=args.roi_align_forward)
    src = Path(args.images)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))
        if not files:
            raise ValueError(f"{src}: no .jpg/.png images in this folder")
    elif src.is_file():
        files = [src]
    else:
        raise ValueError(f"{src}: no such image or folder")
    ids = _image_ids(files, args.ann)
    preds, skipped = [], []
    for f in tqdm(files, desc="predict", unit="image", disable=args.quiet or len(files) < 2, dynamic_ncols=True):
        try:
            image = load_image(f, ids[f.name])
        except DatasetError as e:
            if args.strict:
                raise
            print(f"warning: skipped {e}", file=sys.stderr)
            skipped.append(str(f))
            continue
        preds.extend(predictor.predict_coco(image, ids[f.name], score_thresh=args.score_thresh))
    if len(skipped) == len(files):
        raise DatasetError(f"{src}: none of its {len(files)} images could be read; nothing written")
    write_json_atomic(preds, args.out)
    return {"images": len(files) - len(skipped), "skipped": len(skipped), "skipped_files": skipped,
            "detections": len(preds), "out": str(args.out)}


def _image_ids(files: list[Path], ann: str | None) -> dict[str, int]:
    """image_id per file: from a COCO annotations file's ``file_name`` (if given), else 1, 2, ..."""
    if ann is None:
        return {f.name: k + 1 for k, f in enumerate(files)}
    from .data.coco import read_json

    by_name = {Path(im["file_name"]).name: im["id"] for im in read_json(Path(ann))["images"]}
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise ValueError(f"{ann}: no image entry for {missing[:5]}")
    return {f.name: by_name[f.name] for f in files}


def _cmd_demo(args) -> dict:
    """``demo`` (``make demo``): the embedded dataset (train + val), generated unless already there, summarised."""
    from .data.coco import CocoDataset
    from .data.splits import resolve_split
    from .data.embedded import GENERATOR_VERSION, ensure_dataset

    out = {}
    for part in ensure_dataset(args.out, args.size, workers=args.workers):
        d = Path(args.out) / part
        ds = CocoDataset.from_dir(d)
        split = resolve_split("voc2nonvoc", ds.data["categories"],
                              voc_like_ids=ds.data["info"]["voc_like_category_ids"])
        masked = CocoDataset.from_dir(d, mask_category_ids=split.a_ids, check_files=False).summary["with_mask"]
        out[part] = {"path": str(d), **ds.summary, "voc2nonvoc_instances_with_mask": masked}
    out["generator_version"] = GENERATOR_VERSION
    out["next"] = [f"python -m maskx train --preset transfer_clsbox_2lrelu_mlp_e2e --data {out['train']['path']} "
                   "--split voc2nonvoc --out runs/maskx",
                   f"python -m maskx predict --checkpoint runs/maskx --images {out['val']['path']}/images "
                   f"--ann {out['val']['path']}/annotations.json --out pred.json",
                   f"python -m maskx eval --gt {out['val']['path']}/annotations.json --pred pred.json --split voc2nonvoc"]
    return out


def _cmd_ship(args) -> dict:
    from maskx_release.ship import build_shipped, write_examples

    if args.examples_only:
        return {"examples": str(write_examples(args.out))}
    if args.compare and Path(args.out).resolve() == Path(args.compare).resolve():
        raise ValueError("--compare needs another --out than the folder it compares with (e.g. --out runs/repro-3k)")
    summary = build_shipped(out=args.out, data=args.data, runs=args.runs, preset=args.preset, iters=args.iters,
                            baseline=None if args.no_baseline else args.baseline,
                            progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), size=args.size,
                            overrides=tuple(args.set or ()))
    if args.compare:
        from maskx_release.ship import compare_shipped

        summary["compare"] = {"with": args.compare, **compare_shipped(args.out, args.compare)}
    return summary


def _study(args):
    from maskx_study.runner import SCALES, Study, beyond_budget, default_results_dir, default_runs_dir, plan

    if args.scale not in SCALES:
        raise ValueError(f"unknown study scale {args.scale!r}; choose one of {sorted(SCALES)}")
    scale = SCALES[args.scale]
    if getattr(args, "data", None):
        import dataclasses

        scale = dataclasses.replace(scale, data=args.data)
    if getattr(args, "beyond_budget", False):
        scale = beyond_budget(scale)
    tables = args.tables.split(",") if args.tables else None
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    results = args.results or default_results_dir(args.scale)
    study = Study(scale, results_dir=Path(results), runs_dir=Path(args.runs or default_runs_dir(args.scale)),
                  progress=not args.quiet,
                  log=lambda m: print(m, file=sys.stderr))
    runs = plan(scale, tables, seeds)
    if getattr(args, "backbones", None):  # "main", "second" or backbone names
        alias = {"main": scale.backbone, "second": scale.second_backbone}
        wanted = {alias.get(b, b) for b in args.backbones.split(",")}
        if wanted - set(alias.values()):
            raise ValueError(f"--backbones: unknown {sorted(wanted - set(alias.values()))}; the {args.scale} scale "
                             f"has main={scale.backbone}, second={scale.second_backbone}")
        runs = [r for r in runs if r.backbone in wanted]
    return study, runs


def _cmd_study_plan(args) -> dict:
    from maskx_study.runner import estimate_hours, load_results

    study, runs = _study(args)
    return {"scale": study.scale.to_json(), "runs": len(runs),
            "done": sum(study.result_path(r).is_file() for r in runs),
            **estimate_hours(runs, load_results(study.results_dir)),
            "plan": [("done " if study.result_path(r).is_file() else "todo ") + r.key for r in runs]}


def _cmd_study_run(args) -> dict:
    if args.jobs > 1:  # N worker processes on the same plan, threads split between them
        import subprocess

        from .engine import TrainingError

        argv = list(args.argv)
        if "--jobs" in argv:
            k = argv.index("--jobs")
            del argv[k:k + 2]
        argv = [a for a in argv if not a.startswith("--jobs=")]
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        study, runs = _study(args)
        study.supersede_stale(runs)  # once, before the workers look at results/
        study.train_detectors_first(runs, threads)  # new detectors, and restores wider than a worker
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        procs = [subprocess.Popen([sys.executable, "-m", "maskx", *argv], env=env) for _ in range(args.jobs)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise TrainingError(f"study workers exited with {codes}; rerun the same command to resume")
        return {"jobs": args.jobs, "exit_codes": codes}
    study, runs = _study(args)
    written = study.run(runs, max_runs=args.max_runs)
    return {"written": [str(p) for p in written]}


def _cmd_study_report(args) -> dict:
    from maskx_study.report import write_report
    from maskx_study.runner import default_results_dir

    results = args.results or default_results_dir(args.scale)
    return write_report(results, args.out, scale=args.scale)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maskx", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="embedded dataset tools").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write the embedded COCO-format dataset")
    s.add_argument("--out", required=True, help="output folder (annotations.json + images/)")
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--generator-version", type=int, default=None,
                   help="the world to draw: 4 (current: classes made of shared attributes) or 3 (the families "
                        "world, the counter-example); default: the current one")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)
    s = data.add_parser("synth3k", help="write the embedded 3000-class world (train: set-A masks only; "
                        "val: all masks) as DIR/train and DIR/val, unless already there")
    s.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    s.add_argument("--size", choices=["tiny", "default"], default="default")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--generator-version", type=int, default=None,
                   help="the 3000-class world's version (maskx.data.synthetic3k.VERSIONS; default: GENERATOR_VERSION)")
    s.set_defaults(func=_cmd_synth3k)
    s = data.add_parser("vg-coco", help="Visual Genome boxes (top-K synsets) + COCO masks for the VG objects "
                        "of COCO's 80 classes, as one COCO-format annotations file (paper §5)")
    s.add_argument("--vg", required=True, help="VG folder: image_data.json, objects.json, VG_100K*/")
    s.add_argument("--coco-ann", required=True, help="COCO instances file with the masks (instances_train2017.json)")
    s.add_argument("--exclude-coco-ann", action="append",
                   help="drop VG images of this COCO file's images (instances_val2017.json for training; repeatable)")
    s.add_argument("--images", choices=["all", "coco"], default="all",
                   help="all VG images, or only those whose COCO image is in --coco-ann")
    s.add_argument("--classes", type=int, default=3000)
    s.add_argument("--iou", type=float, default=0.5, help="box IoU a VG object needs to take a COCO mask")
    s.add_argument("--strict", action="store_true", help="treat skippable faults as errors")
    s.add_argument("--out", required=True, help="annotations JSON to write (images stay in --vg)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_vg_coco)
    s = data.add_parser("summary", help="validate a COCO-format folder and print its counts")
    s.add_argument("dir")
    s.add_argument("--split", help="also count mask-labelled instances under this split")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--strict", action="store_true", help="treat skippable faults as errors")
    s.add_argument("--verify-images", action="store_true", help="decode every image")
    s.set_defaults(func=_cmd_summary)

    e = sub.add_parser("eval", help="COCO AP on set A and set B")
    e.add_argument("--gt", required=True, help="ground-truth annotations.json")
    e.add_argument("--pred", required=True, help="predictions, COCO results format")
    e.add_argument("--split", required=True, help="voc2nonvoc, nonvoc2voc, randK_tT or a JSON file")
    e.add_argument("--seed", type=int, default=0, help="seed of random splits")
    e.add_argument("--out", help="also write the metrics JSON here")
    e.set_defaults(func=_cmd_eval)

    t = sub.add_parser("train", help="train a Mask^X R-CNN variant (a preset; any field via --set)")
    t.add_argument("--preset", required=True, help="e.g. agnostic, oracle, transfer_clsbox_2lrelu_mlp_e2e")
    t.add_argument("--data", required=True,
                   help="COCO-format folder (annotations.json + images/), or a COCO annotations file with --images")
    t.add_argument("--images", help="image folder of an annotations file given as --data (e.g. coco/train2017)")
    t.add_argument("--split", help="voc2nonvoc, nonvoc2voc, randK_tT, all (oracle) or a JSON file")
    t.add_argument("--seed", type=int)
    t.add_argument("--iters", type=int)
    t.add_argument("--image-size", type=int)
    t.add_argument("--detector", help="trained detector run: frozen (stage-wise; else trained first) or the "
                   "start of an e2e run")
    t.add_argument("--detector-iters", type=int, help="iterations of that detector, if trained here")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any config field (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    t.add_argument("--stop-after", type=int, help="end this process after N iterations (resume later)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("predict", help="predict on images; writes COCO results JSON")
    pr.add_argument("--checkpoint", required=True, help="run folder or ckpt_*.json")
    pr.add_argument("--images", required=True, help="an image file or a folder of images")
    pr.add_argument("--ann", help="COCO annotations to take image ids from (by file name)")
    pr.add_argument("--score-thresh", type=float, default=0.0)
    pr.add_argument("--roi-align-forward", choices=("torchvision", "sparse"),
                    help="sparse: faster on CPU, same results up to float rounding (default: the checkpoint's)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read "
                    "(default: skip it with a warning and count it)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_predict)

    st = sub.add_parser("study", help="the ablation study: plan, run (resumable), report").add_subparsers(
        dest="study_command", required=True)
    for name, func, text in (("plan", _cmd_study_plan, "list the study's runs, done or to do"),
                             ("run", _cmd_study_run, "train and evaluate the runs not done yet"),
                             ("report", _cmd_study_report, "write RESULTS.md from the results folder")):
        c = st.add_parser(name, help=text)
        c.add_argument("--scale", default="study", help="study (the committed one) or tiny (smoke test)")
        c.add_argument("--results", help="folder of per-run result JSON files (default: results/ for the "
                       "study scale, runs/results-<scale> for others)")
        if name == "report":
            c.add_argument("--out", default="RESULTS.md")
        else:
            c.add_argument("--runs", help="folder of run checkpoints (default: runs/<scale>; not committed)")
            c.add_argument("--tables", help="comma-separated subset of gate,t1a,t1b,t1c,t1d,t2,deep,fig3")
            c.add_argument("--seeds", help="comma-separated subset of the scale's seeds")
            c.add_argument("--backbones", help="comma-separated subset of main,second (or backbone names)")
            c.add_argument("--beyond-budget", action="store_true", help="with the runs the scale's 8-hour budget "
                           "leaves out: Table 2's second backbone on every seed (RESULTS.md, Scale and cost)")
            c.add_argument("--max-runs", type=int, help="stop after this many runs")
            c.add_argument("--jobs", type=int, default=1, help="worker processes sharing the plan (threads split)")
            c.add_argument("--data", help="embedded data folder (default: the scale's; generated when missing)")
            c.add_argument("--quiet", action="store_true")
        c.set_defaults(func=func)

    sh = sub.add_parser("ship", help="train, export and evaluate the shipped 3000-class model (resumable)")
    sh.add_argument("--out", default="models/maskx-3k", help="where the exported checkpoint and eval.json go")
    sh.add_argument("--data", default="data/synth3k", help="the 3000-class world (generated when missing)")
    sh.add_argument("--size", choices=["tiny", "default"], default="default")
    sh.add_argument("--runs", default="runs/maskx-3k", help="training run folder (checkpoints; not committed)")
    sh.add_argument("--preset", default="maskx_3k", help="a stage-wise (stage mask) preset: maskx_3k (Mask^X)")
    sh.add_argument("--baseline", default="agnostic_mlp_3k",
                    help="the baseline trained the same way on the same detector (its masks on GT boxes go in eval.json)")
    sh.add_argument("--no-baseline", action="store_true", help="train no baseline")
    sh.add_argument("--iters", type=int, help="every run's iterations (a quick check; the presets' own otherwise)")
    sh.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    sh.add_argument("--examples-only", action="store_true",
                    help="only (re)write OUT/examples.json: the model's masks on the app's sample images")
    sh.add_argument("--compare", metavar="DIR",
                    help="after shipping into --out, compare it file by file with DIR (e.g. models/maskx-3k)")
    sh.add_argument("--quiet", action="store_true")
    sh.set_defaults(func=_cmd_ship)

    d = sub.add_parser("demo", help="generate the embedded dataset once and print its summary")
    d.add_argument("--out", default="data/synth-default")
    d.add_argument("--size", choices=["tiny", "default"], default="default")
    d.add_argument("--workers", type=int, default=2)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data.coco import DatasetError
    from .data.splits import SplitError
    from .engine import TrainingError
    from .evaluate import PredictionError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = args.func(args)
    except (DatasetError, SplitError, PredictionError, CheckpointError, TrainingError, FileExistsError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one result on stdout
        print(json.dumps(result, indent=2))
    # ship --compare: a reproduction that differs exits 1
    return 1 if isinstance(result, dict) and (result.get("compare") or {}).get("identical") is False else 0


if __name__ == "__main__":
    sys.exit(main())
