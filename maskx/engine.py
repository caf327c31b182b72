"""The training and evaluation loops, and nothing else (wiring lives in ``maskx.train``).

Determinism, so that ``--resume`` continues exactly: the data order of iteration i is a function
of (seed, i) only (a fresh permutation per epoch), horizontal flips are drawn from (seed, sample
position), and the torch RNG (RoI sampling) is reseeded from (seed, i, rank) before each step.
Resuming therefore needs only the weights, the momentum buffers and i.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from .config import Config
from .data.coco import collate, load_image
from .evaluate import evaluate_predictions


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the last good checkpoint is kept."""


def lr_at(iteration: int, config: Config, world_size: int = 1) -> float:
    """Linear warm-up from ``warmup_factor`` x lr, then x0.1 at each ``decay_at`` fraction of iters
    (``lr_schedule="step"``) or half a cosine from lr at 0 to 0 at ``iters`` (``"cosine"``).

    ``config.batch_size`` is per process, so a step of ``world_size`` processes sees
    ``batch_size * world_size`` images and the lr scales with it (paper: 0.02 for 8 GPUs x 2 images).
    """
    if config.lr_schedule == "cosine":
        lr = config.lr * world_size * 0.5 * (1 + math.cos(math.pi * min(iteration, config.iters) / config.iters))
    else:
        lr = config.lr * world_size * 0.1 ** sum(iteration >= int(f * config.iters) for f in config.decay_at)
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        lr *= config.warmup_factor * (1 - alpha) + alpha
    return lr


def batch_positions(iteration: int, batch_size: int, world_size: int = 1, rank: int = 0) -> range:
    """Positions in the endless sample stream that this rank reads at ``iteration``."""
    start = (iteration * world_size + rank) * batch_size
    return range(start, start + batch_size)


def sample_at(position: int, num_samples: int, seed: int) -> int:
    """Dataset index at a stream position: epoch e reads a permutation seeded by (seed, e)."""
    epoch, offset = divmod(position, num_samples)
    return int(_epoch_order(num_samples, seed, epoch)[offset])


@functools.lru_cache(maxsize=4)
def _epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror image [3, H, W], boxes [N, 4] (xyxy) and masks [N, H, W] left-right."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class SampleStream(torch.utils.data.Dataset):
    """Stream position → (image, target) with its deterministic flip; indexable by any worker."""

    def __init__(self, dataset, config: Config):
        self.dataset, self.seed, self.hflip = dataset, config.seed, config.hflip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int):
        image, target = self.dataset[sample_at(position, len(self.dataset), self.seed)]
        g = torch.Generator().manual_seed(self.seed * 7_919 + position)
        if torch.rand((), generator=g).item() < self.hflip and getattr(self.dataset, "flippable", True):
            image, target = hflip(image, target)
        return image, target


def batch_loader(dataset, config: Config, start: int, end: int, world_size: int = 1, rank: int = 0):
    """Batches of iterations ``start .. end - 1`` for this rank, ``config.num_workers`` loading ahead."""
    batches = [list(batch_positions(it, config.batch_size, world_size, rank)) for it in range(start, end)]
    return torch.utils.data.DataLoader(SampleStream(dataset, config), batch_sampler=batches,
                                       num_workers=config.num_workers, collate_fn=collate)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, dataset, config: Config, start_iter: int = 0,
          rank: int = 0, world_size: int = 1, log_path: Optional[Path] = None,
          on_checkpoint: Optional[Callable[[int], None]] = None, progress: bool = True,
          stop_after: Optional[int] = None, device: torch.device = torch.device("cpu")) -> int:
    """Run iterations ``start_iter .. config.iters - 1`` (or up to ``stop_after``); returns the
    number of iterations done. The learning-rate schedule is always that of ``config.iters``.

    A step whose loss or gradient is not finite is skipped (no update) and logged; after
    ``config.max_bad_steps`` in a row, ``TrainingError`` is raised. ``on_checkpoint(i)`` is called
    after every ``config.checkpoint_every`` iterations and at the end.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bad_in_row = 0
    end = config.iters if stop_after is None else min(stop_after, config.iters)
    bar = tqdm(range(start_iter, end), initial=start_iter, total=config.iters, disable=not progress or rank,
               desc="train", dynamic_ncols=True)
    log = open(log_path, "a") if log_path is not None and rank == 0 else None
    loader = batch_loader(dataset, config, start_iter, end, world_size, rank)
    try:
        t0 = time.perf_counter()
        for it, (images, targets) in zip(bar, loader):
            images, targets = list(images), list(targets)
            if device.type != "cpu":
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            lr = lr_at(it, config, world_size)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            torch.manual_seed(config.seed * 1_000_003 + it * 1009 + rank)
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)
            record = {"iter": it, "lr": lr, "loss": float(loss.detach()),
                      **{k: float(v.detach()) for k, v in losses.items()}}
            if not (math.isfinite(record["loss"]) and math.isfinite(float(norm))):
                bad_in_row += 1
                record["skipped"] = "non-finite loss or gradient"
                if bad_in_row >= config.max_bad_steps:
                    _write(log, record)
                    raise TrainingError(f"{bad_in_row} non-finite losses in a row at iteration {it} "
                                        f"(losses {record}); the last good checkpoint is kept. Lower the "
                                        "learning rate (--set base_lr=...) or check the data, then --resume")
            else:
                bad_in_row = 0
                optimizer.step()
            record["sec"] = round(time.perf_counter() - t0, 4)  # data wait included
            t0 = time.perf_counter()
            _write(log, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.4f}")
            done = it + 1
            if on_checkpoint is not None and bad_in_row == 0 and (done % config.checkpoint_every == 0 or done == end):
                on_checkpoint(done)
    finally:
        if log is not None:
            log.close()
    return end


def _write(log, record: dict) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()


@torch.inference_mode()
def evaluate_model(predictor, dataset, split, progress: bool = True,
             present: Optional[dict[int, set]] = None) -> tuple[dict, list[dict]]:
    """COCO AP on set A and set B of ``split`` over ``dataset`` (a CocoDataset with every mask);
    returns (metrics, predictions in the COCO results format).

    ``present`` (image id → the category ids with ground truth in that image), when given, skips the
    masks of detections of a class absent from their image (``MaskXRoIHeads.masks_only_for``: empty
    masks; segm AP/AP50/AP75 and per-class AP unchanged, APs/m/l not)."""
    preds = predict_dataset(predictor, dataset, progress, present)
    return evaluate_predictions(dataset.data, preds, split), preds


@torch.inference_mode()
def predict_dataset(predictor, dataset, progress: bool = True, present: Optional[dict[int, set]] = None) -> list[dict]:
    """``predictor``'s predictions on every image of ``dataset``, in the COCO results format
    (``present``: as in ``evaluate_model``)."""
    preds = []
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, dynamic_ncols=True):
        image_id = dataset.ids[i]
        im = dataset.images[image_id]
        image = load_image(dataset.image_path(i), image_id, (im["height"], im["width"]))
        if present is None:
            preds.extend(predictor.predict_coco(image, image_id))
            continue
        with predictor.model.roi_heads.masks_only_for(predictor.labels_of(present.get(image_id, ()))):
            preds.extend(predictor.predict_coco(image, image_id))
    return preds
