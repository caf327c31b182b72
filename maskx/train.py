"""Wiring for ``python -m maskx train``: data, split, model, optimizer, resume, DDP, checkpoints.

Single process: ``python -m maskx train --preset NAME --data DIR --out RUN``.
Distributed: ``torchrun --nproc_per_node=G -m maskx train ...`` (NCCL on GPUs, gloo on CPU):
each rank reads its own slice of every global batch (``engine.batch_positions``), gradients are
averaged by DDP, rank 0 writes checkpoints and the log.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from . import __version__
from .checkpoint import (CheckpointError, check_classes, find_checkpoint, list_checkpoints, load_model_state,
                         load_optimizer_state, model_state, save_checkpoint)
from .config import Config, ConfigError, get_preset
from .data.coco import CocoDataset, DatasetError, check_coco_structure, read_json
from .data.splits import Split, info_split_args, resolve_split
from .engine import train
from .atomic import atomic_write, write_json_atomic
from .models.maskx_rcnn import build_model

MASK_BRANCH = ("roi_heads.mask_head.", "roi_heads.mask_predictor.", "roi_heads.mask_mlp.")


def data_paths(data, images=None) -> tuple[Path, Path]:
    """(annotations file, images folder) from ``data``: a folder holding ``annotations.json`` and
    ``images/`` (what ``maskx data synth`` writes), or a COCO annotations file (then ``images``
    names its image folder, e.g. ``instances_train2017.json`` with ``train2017/``)."""
    data = Path(data)
    if data.is_dir():
        ann = data / "annotations.json"
        if not ann.is_file():
            raise DatasetError(f"{data}: no annotations.json here; pass a COCO annotations file as --data "
                               "(with --images DIR) or a folder written by `python -m maskx data synth`")
        return ann, Path(images) if images else data / "images"
    if not data.is_file():
        raise DatasetError(f"{data}: no such folder or annotations file")
    if images is None:
        raise DatasetError(f"{data}: an annotations file needs --images DIR (the folder of its images)")
    return data, Path(images)


def resolve_data(data, split_name: str, seed: int, images=None) -> tuple[CocoDataset, Split]:
    """The training dataset with masks only for set A of ``split_name`` (``data`` as in ``data_paths``)."""
    ann, image_dir = data_paths(data, images)
    parsed = read_json(ann)
    check_coco_structure(parsed, ann)  # before the split reads the categories
    info = parsed.get("info") if isinstance(parsed.get("info"), dict) else {}
    split = resolve_split(split_name, parsed["categories"], seed=seed,
                          require_b=split_name != "all", **info_split_args(info))
    return CocoDataset(image_dir, ann, mask_category_ids=split.a_ids, data=parsed), split


def cpu_signature() -> str:
    """The CPU a run trained on: model name, family/model/stepping and the kernels torch picked. CPU
    training is bit-reproducible for a given torch version and thread count on one kind of CPU; a
    restore on another kind may differ, so a run records the kind it trained on."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    ids = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{name} ({ids}; torch {torch.backends.cpu.get_cpu_capability()})"


def run_meta(config: Config, dataset: CocoDataset, split: Split, world_size: int) -> dict:
    """What a run's ``run.json`` and every checkpoint JSON record: config, classes, set A, data, versions, CPU."""
    return {"config": config.to_json(), "class_names": list(dataset.categories.names),
            "category_ids": list(dataset.categories.ids), "set_A": list(split.a_ids), "split": split.to_json(),
            "data": str(dataset.ann_file), "world_size": world_size, "maskx_version": __version__,
            # CPU training is bit-reproducible for a given torch version, thread count and kind of CPU
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu": cpu_signature(),
            "generator_version": dataset.data.get("info", {}).get("generator_version")}


def load_detector(model: torch.nn.Module, detector_dir, dataset: CocoDataset, config: Config) -> None:
    """Stage 2 of stage-wise training: copy a trained detector's backbone, RPN and box branch."""
    meta, tensors = find_checkpoint(detector_dir)
    check_classes(meta, list(dataset.categories.names), list(dataset.categories.ids), str(detector_dir))
    det = Config.from_json(meta["config"])
    if det.stage == "mask":
        raise CheckpointError(f"{detector_dir}: this run is itself a stage-2 mask run, not a detector")
    for field in ("backbone", "fpn_dim", "box_head_dim", "image_size"):
        if getattr(det, field) != getattr(config, field):
            raise CheckpointError(f"{detector_dir}: detector has {field}={getattr(det, field)!r}, this run "
                                  f"{getattr(config, field)!r}; train a matching detector")
    load_model_state(model, model_state(tensors), str(detector_dir), skip_prefixes=MASK_BRANCH)


# what a stage-wise run must share with the end-to-end run that starts from it (``Config.mask_init``)
MASK_INIT_FIELDS = ("backbone", "box_head_dim", "image_size", "mask_head", "transfer_input", "transfer_layers",
                    "transfer_activation", "transfer_hidden", "embedding_norm", "mlp_branch", "mlp_hidden",
                    "mask_convs", "mask_dim", "split")


def load_mask_init(model: torch.nn.Module, init_dir, dataset: CocoDataset, config: Config) -> None:
    """Start an end-to-end run from a finished stage-wise run on the same detector: its frozen detector
    and trained mask branch (paper §3.2: stage-wise training, then joint training of every part)."""
    init_dir = Path(init_dir)
    if not (init_dir / "done.json").is_file():
        raise CheckpointError(f"{init_dir}: mask_init must be a finished stage-wise run (no done.json); "
                              "train it first")
    meta, tensors = find_checkpoint(init_dir)
    check_classes(meta, list(dataset.categories.names), list(dataset.categories.ids), str(init_dir))
    init = Config.from_json(meta["config"])
    if init.stage != "mask":
        raise CheckpointError(f"{init_dir}: mask_init must be a stage-wise (stage 'mask') run, got stage {init.stage!r}")
    if not init.detector or Path(init.detector).resolve() != Path(config.detector).resolve():
        raise CheckpointError(f"{init_dir}: its detector is {init.detector!r}, this run's {config.detector!r}; "
                              "start from a stage-wise run on the same detector")
    differ = [f for f in MASK_INIT_FIELDS if getattr(init, f) != getattr(config, f)]
    if differ:
        raise CheckpointError(f"{init_dir}: the stage-wise run differs in {', '.join(f'{f}={getattr(init, f)!r}' for f in differ)}"
                              "; start from the stage-wise run of the same method")
    load_model_state(model, model_state(tensors), str(init_dir))


def read_log(path: Path) -> list[dict]:
    """The records of a run's ``log.jsonl`` (one per logged iteration), oldest first; [] when the
    file is missing. A last line cut by a kill is skipped."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _truncate_log(path: Path, start: int) -> None:
    """Drop log records of iterations >= ``start`` (written after the checkpoint a resume starts
    from), so that the log of a resumed run reads like that of an uninterrupted one."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iter", -1) < start:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(f"{x}\n" for x in keep)))


def _init_distributed() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():  # a stage-wise run trains its detector inside the same process group
        dist.init_process_group(backend)
    rank = dist.get_rank()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world_size, torch.device("cuda", local)
    return rank, world_size, torch.device("cpu")


def param_groups(model: torch.nn.Module, config: Config) -> list[dict]:
    """Trainable parameters as SGD groups: the detector at lr x 1, the mask branch (FCN, mask
    weights or T, MLP branch) at lr x ``config.mask_lr_mult`` (``lr_mult``, applied by ``engine.train``)."""
    groups = {1.0: [], config.mask_lr_mult: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[config.mask_lr_mult if name.startswith(MASK_BRANCH) else 1.0].append(p)
    return [{"params": ps, "lr_mult": mult} for mult, ps in groups.items() if ps]


def run_training(config: Config, data_dir, out_dir, resume: bool = False, progress: bool = True,
                 detector_iters: Optional[int] = None, stop_after: Optional[int] = None,
                 images_dir=None) -> Path:
    """Train ``config`` on ``data_dir`` into ``out_dir``; returns the newest checkpoint's JSON path.

    ``stop_after`` ends this process after that many iterations (checkpoint written), with the
    schedule still that of ``config.iters``: ``--resume`` later continues exactly.

    Stage ``mask`` without ``config.detector`` first trains the detector into ``out_dir/detector``
    (same seed, size and iterations unless ``detector_iters``), then the mask head on it.
    """
    out_dir = Path(out_dir)
    if not resume and list_checkpoints(out_dir):
        raise FileExistsError(f"{out_dir} already holds checkpoints: pass --resume to continue, or another --out")

    # one process group for the whole call, the detector of a stage-wise run included: destroying
    # it and initialising another under torchrun fails (the new group meets the old one's keys)
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world_size, device = _init_distributed()
    try:
        if config.mask_roi_cache and world_size > 1:
            raise ConfigError("mask_roi_cache trains one process's mask head on one CPU cache; under torchrun "
                              "use --set mask_roi_cache=0")
        if config.stage == "mask" and not config.detector:
            det_cfg = get_preset("detector").replace(
                **{f: getattr(config, f) for f in ("backbone", "pretrained_backbone", "trainable_layers", "fpn_dim",
                                                   "image_size", "seed", "batch_size", "base_lr", "warmup_iters",
                                                   "rois_per_image", "box_head_dim", "checkpoint_every")},
                split=config.split if config.split != "all" else "voc2nonvoc",
                iters=detector_iters or config.iters)
            if not (out_dir / "detector" / "done.json").is_file():
                run_training(det_cfg, data_dir, out_dir / "detector", resume=resume, progress=progress,
                             images_dir=images_dir)
            config = config.replace(detector=str((out_dir / "detector").resolve()))

        dataset, split = resolve_data(data_dir, config.split, config.seed, images=images_dir)
        names = list(dataset.categories.names)
        torch.manual_seed(config.seed)
        model = build_model(config, names)
        if config.mask_init:  # stage e2e from a stage-wise run: its checkpoint holds the detector too
            load_mask_init(model, config.mask_init, dataset, config)
        elif config.detector:  # stage mask: the frozen detector; stage e2e: start from it (warm start)
            load_detector(model, config.detector, dataset, config)
        if config.stage == "box":  # only the box head learns (maskx.box_cache)
            if not config.detector:
                raise ConfigError("stage 'box' re-trains the box head of a trained detector: set 'detector'")
            if world_size > 1:
                raise ConfigError("stage 'box' trains one process's box head on one CPU cache; run it without torchrun")
            model.requires_grad_(False)
            for module in (model.roi_heads.box_head, model.roi_heads.box_predictor):
                module.requires_grad_(True)
            fresh = {"": (), "predictor": (model.roi_heads.box_predictor,),
                     "head": (model.roi_heads.box_head, model.roi_heads.box_predictor)}[config.box_reinit]
            torch.manual_seed(config.seed)
            for module in fresh:
                for layer in module.modules():
                    if isinstance(layer, torch.nn.Linear):
                        layer.reset_parameters()
        meta = run_meta(config, dataset, split, world_size)
        model.to(device)
        if config.optimizer == "adamw":
            optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.SGD(param_groups(model, config), lr=config.lr, momentum=config.momentum,
                                        weight_decay=config.weight_decay)
        start = 0
        if resume and list_checkpoints(out_dir):
            ck_meta, tensors = find_checkpoint(out_dir)
            check_classes(ck_meta, names, list(dataset.categories.ids), str(out_dir))
            if not isinstance(ck_meta.get("iteration"), int) or not isinstance(ck_meta.get("config"), dict):
                raise CheckpointError(f"{out_dir}: checkpoint metadata lacks 'iteration' or 'config'; "
                                      "it was not written by `maskx train`")
            if Config.from_json(ck_meta["config"]).replace(iters=config.iters).with_inference_of(config) != \
                    config:
                raise CheckpointError(f"{out_dir}: the checkpoint was trained with another config; resume with the "
                                      "same preset and options (only --iters and the inference settings may change)")
            load_model_state(model, model_state(tensors), str(out_dir))
            load_optimizer_state(optimizer, model, tensors)
            start = int(ck_meta["iteration"])
        if rank == 0:  # also a run killed before its first checkpoint: its records are redone from 0
            _truncate_log(out_dir / "log.jsonl", start)
        net = model
        if world_size > 1:
            # a detector run leaves the (untrained) mask branch unused
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.stage == "detector")
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic({**meta, "status": "training"}, out_dir / "run.json")

        def on_checkpoint(done: int) -> None:
            if rank == 0:
                save_checkpoint(out_dir, done, model, meta, optimizer, keep=config.keep_checkpoints)

        train_data = dataset
        if config.mask_roi_cache:  # stage 2 on the frozen detector's cached RoIs (maskx.roi_cache)
            from .roi_cache import cached_training

            net, train_data = cached_training(model, dataset, split, config, config.detector, progress=progress)
        elif config.stage == "box":  # the box head on the frozen detector's cached RoIs (maskx.box_cache)
            from .box_cache import cached_box_training

            net, train_data = cached_box_training(model, dataset, config, config.detector, out_dir, progress=progress)
        t0 = time.perf_counter()
        train(net, optimizer, train_data, config, start_iter=start, rank=rank, world_size=world_size,
              log_path=out_dir / "log.jsonl", on_checkpoint=on_checkpoint, progress=progress, stop_after=stop_after,
              device=device)
        if rank == 0 and (stop_after is None or stop_after >= config.iters):
            if config.box_cache_mask_rois:  # the mask RoI cache staged in the box cache's pass is this detector's
                from .roi_cache import adopt_roi_cache

                if not adopt_roi_cache(out_dir, config.detector):
                    print(f"{out_dir}: no mask RoI cache of this detector came from the box cache's pass (the box "
                          "cache was built before it was asked for, or the backbone or RPN changed); a stage-mask "
                          "run on it builds its own")
            write_json_atomic({**meta, "status": "done", "iterations": config.iters,
                               "train_seconds_this_process": round(time.perf_counter() - t0, 1)},
                              out_dir / "done.json")
        if world_size > 1:
            dist.barrier()
        return list_checkpoints(out_dir)[-1] if rank == 0 else out_dir
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()

