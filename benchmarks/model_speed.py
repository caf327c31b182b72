"""Mask^X R-CNN against stock torchvision Mask R-CNN, side by side in one run, on the CPU.

    python benchmarks/model_speed.py          # full run: about 8 minutes on 2 idle cores, 20-30 on busy ones
    python benchmarks/model_speed.py --quick --out /tmp/ms.json   # smoke run (CI), numbers are noise

Writes ``benchmarks/results/model_speed.json`` (atomically) and ``profile_train_step.txt`` next to
it, and prints markdown tables. ``torch.set_num_threads(2)`` (``--threads``), fixed seeds.

Timing: every section interleaves its variants within each repetition (rotating their order) and
reports the median over repetitions; "x stock" is the median of the per-repetition ratios (paired,
so drift in other work on the machine largely cancels), with the ratio of the fastest repetitions
(min/min) beside it. FLOP counts, which no other work on the machine can disturb, are given too.

a. Training step (zero_grad, forward, summed losses, backward, SGD step), batch 2, ``--image-size``
   px, 512 RoIs per image, K = 80 classes + background, ResNet-18 FPN from
   ``maskx.models.backbones.build_backbone('resnet18')`` with ``anchor_generator_for`` in both:
   - ``stock``: ``torchvision.models.detection.MaskRCNN``; its mask head trains on every positive RoI;
   - ``maskx_mlp`` (preset ``transfer_clsbox_2lrelu_mlp_e2e``, Mask^X R-CNN) and ``maskx``
     (``transfer_clsbox_2lrelu_e2e``, no MLP branch), each with the config default
     ``mask_rois_per_image=64`` (``*_cap64``) and with ``mask_rois_per_image=0`` (``*_nocap``: every
     positive RoI, the same mask work as stock: the like-for-like comparison).
   All models share the stock model's backbone, RPN, box head, box predictor and mask FCN weights
   (copied), every step starts from the same seed and the SGD lr is 0, so every model sees the same
   proposals, the same sampled RoIs and the same positive RoIs in every repetition (the optimizer
   still does all of its arithmetic). The detector losses are checked to be equal across models.
   Synthetic images: uniform noise with 3 elliptical instances each (boxes, masks, ``has_mask`` all
   set). At random init that gives about 27 positive RoIs per image, under the cap of 64, so
   ``_cap64`` = ``_nocap`` there; a second comparison (``train_dense``, ``--dense-instances`` 16)
   gives about 125 per image, near the 128 (25 % of 512) a trained detector samples, where the cap
   binds.
b. Inference per image (eval, ``torch.inference_mode``, batch 1), score threshold 0 so both produce
   100 detections (and 100 masks, pasted into the image as torchvision does); 3x the repetitions.
c. The mask predictor alone vs K = 81, 1001, 3001 on R = 100 RoIs of [100, 256, 28, 28] features:
   ``stock`` = torchvision's ``MaskRCNNPredictor.mask_fcn_logits`` (1x1 conv to K channels) then
   ``maskrcnn_inference`` (sigmoid of all K, pick each RoI's class); ``ours`` = ``MaskWeights``
   (transfer, cls+box, T = 5120→256→256 LeakyReLU, run on the distinct labels only) then
   ``gather_mask_logits`` and a sigmoid. Labels: uniform over the K - 1 classes. Training variant:
   forward, the mask BCE on each RoI's own class (as ``maskrcnn_loss``), backward into the features
   and the predictor. Each method's three K are interleaved with each other (ours, being cheap,
   with 5x the repetitions). The code of this section is ``predictor_speed.py``; the timing
   helpers are ``timing.py``.
   Peak memory: the peak of the bytes held by torch tensors allocated during one call, above what
   was live when it started: the running sum of every allocation and free that
   ``torch.profiler(profile_memory=True)`` records (the CPU allocator reports each one), so it counts
   the backends' scratch tensors too; exact and repeatable, unlike process RSS (and tracemalloc
   cannot see torch's allocations). Next to it, the analytic size of the logits tensors (logits and
   their sigmoid at inference, logits and their gradient in training).
d. FLOPs of one training step and of one inference (``torch.utils.flop_counter.FlopCounterMode``:
   convs and matmuls, forward and backward; RoIAlign, NMS and elementwise ops are not counted) and
   achieved GFLOP/s, against this machine's fp32 matmul peak (best of 5 2048^3 ``torch.mm``,
   sampled before, between and after the sections; the best sample counts). A
   ``torch.profiler`` table (top 15 ops by self CPU time) of one Mask^X R-CNN training step (cap
   64 and no cap) and one stock step goes to ``profile_train_step.txt``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(REPO))

from maskx.config import get_preset  # noqa: E402
from maskx.atomic import write_json_atomic  # noqa: E402
from maskx.models.backbones import anchor_generator_for, build_backbone  # noqa: E402
from maskx.models.maskx_rcnn import build_model  # noqa: E402
from predictor_speed import PRED_KS, PRED_ROIS, bench_predictor  # noqa: E402
from timing import interleave, matmul_gflops, quiet_stderr, step_flops  # noqa: E402

NUM_CLASSES = 81  # K = 80 + background
CLASS_NAMES = [f"class{i}" for i in range(1, NUM_CLASSES)]
BATCH = 2
ROIS_PER_IMAGE = 512
INSTANCES_PER_IMAGE = 3
DETECTIONS = 100
TARGETS = {"train_ratio_max": 1.10, "inference_ratio_max": 1.05, "predictor_3001_over_81_max": 1.10}
TRAIN_VARIANTS = ("stock", "maskx_mlp_cap64", "maskx_mlp_nocap", "maskx_cap64", "maskx_nocap", "maskx_mlp_nocap_tvroi",
                  "maskx_mlp_cap64_tvroi", "maskx_mlp_cap64_sparsefwd")
INFER_VARIANTS = ("stock", "maskx_mlp", "maskx", "maskx_mlp_sparsefwd")
DENSE_INSTANCES = 16  # about 125 positive RoIs per image at random init, near the 128 a trained detector samples
DENSE_VARIANTS = ("stock", "maskx_mlp_cap64", "maskx_mlp_nocap", "maskx_mlp_nocap_tvroi", "maskx_mlp_cap64_sparsefwd")
PRESET = {"maskx_mlp": "transfer_clsbox_2lrelu_mlp_e2e", "maskx": "transfer_clsbox_2lrelu_e2e"}
# RoIAlign of a Mask^X variant (its name's suffix, see parse_variant) → config fields
ROI_ALIGN = {"sparse": dict(roi_align_backward="sparse", roi_align_forward="torchvision"),  # the default
             "torchvision": dict(roi_align_backward="torchvision", roi_align_forward="torchvision"),  # _tvroi
             "sparsefwd": dict(roi_align_backward="sparse", roi_align_forward="sparse")}  # _sparsefwd


# ----------------------------------------------------------------------------- models and data

def synthetic_batch(size: int, seed: int, batch: int = BATCH, instances: int = INSTANCES_PER_IMAGE):
    """``batch`` noise images [3, size, size] in 0..1, each with ``instances`` elliptical instances."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g))
        boxes, masks = [], []
        for _ in range(instances):
            w, h = (torch.rand(2, generator=g) * 0.35 + 0.15) * size
            x0 = torch.rand(1, generator=g).item() * (size - w.item())
            y0 = torch.rand(1, generator=g).item() * (size - h.item())
            boxes.append([x0, y0, x0 + w.item(), y0 + h.item()])
            cx, cy = x0 + w / 2, y0 + h / 2
            masks.append((((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1).to(torch.uint8))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.randint(1, NUM_CLASSES, (instances,), generator=g),
                        "masks": torch.stack(masks),
                        "has_mask": torch.ones(instances, dtype=torch.bool)})
    return images, targets


def build_stock(image_size: int, score_thresh: float = 0.05):
    from torchvision.models.detection import MaskRCNN

    backbone = build_backbone("resnet18")
    return MaskRCNN(backbone, num_classes=NUM_CLASSES, min_size=image_size, max_size=image_size,
                    image_mean=backbone.image_mean, image_std=backbone.image_std,
                    rpn_anchor_generator=anchor_generator_for(backbone),
                    box_batch_size_per_image=ROIS_PER_IMAGE, box_score_thresh=score_thresh,
                    box_detections_per_img=DETECTIONS)


def build_maskx(kind: str, image_size: int, mask_rois_per_image: int = 64, score_thresh: float = 0.05,
                roi_align: str = "sparse"):
    config = get_preset(PRESET[kind]).replace(
        image_size=image_size, rois_per_image=ROIS_PER_IMAGE, mask_rois_per_image=mask_rois_per_image,
        score_thresh=score_thresh, detections_per_img=DETECTIONS, batch_size=BATCH,
        **ROI_ALIGN[roi_align])
    return build_model(config, CLASS_NAMES), config


def share_weights(stock, model) -> None:
    """Give ``model`` (Mask^X) the stock model's backbone, RPN, box branch and mask FCN weights."""
    model.backbone.load_state_dict(stock.backbone.state_dict())
    model.rpn.load_state_dict(stock.rpn.state_dict())
    for name in ("box_head", "box_predictor"):
        getattr(model.roi_heads, name).load_state_dict(getattr(stock.roi_heads, name).state_dict())
    model.roi_heads.mask_head.convs.load_state_dict(stock.roi_heads.mask_head.state_dict())
    model.roi_heads.mask_head.upsample.load_state_dict(stock.roi_heads.mask_predictor.conv5_mask.state_dict())


def count_mask_rois(model) -> list:
    """Record the number of RoIs entering the mask head on every forward (appended to the list)."""
    seen: list = []
    model.roi_heads.mask_head.register_forward_hook(lambda m, inp, out: seen.append(int(inp[0].shape[0])))
    return seen


def params_m(model) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def train_step(model, optimizer, images, targets, seed: int) -> dict:
    torch.manual_seed(seed)  # the same proposal / RoI sampling for every model
    optimizer.zero_grad(set_to_none=True)
    losses = model(images, targets)
    sum(losses.values()).backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def infer_step(model, image) -> int:
    with torch.inference_mode():
        out = model([image])
    return int(out[0]["boxes"].shape[0])


# ----------------------------------------------------------------------------- a, b, d: whole models

def parse_variant(name: str) -> tuple[str, int, str]:
    """'maskx_mlp_cap64' → ('maskx_mlp', 64, 'sparse'); 'maskx_nocap' → ('maskx', 0, 'sparse');
    'maskx' → ('maskx', 64, 'sparse'); a '_tvroi' suffix: torchvision's RoIAlign backward (the baseline);
    '_sparsefwd': the sparse RoIAlign forward too (``roi_align_forward='sparse'``)."""
    roi = "sparse"
    for suffix, how in (("_tvroi", "torchvision"), ("_sparsefwd", "sparsefwd")):
        if name.endswith(suffix):
            name, roi = name[:-len(suffix)], how
    if name.endswith("_nocap"):
        return name[:-len("_nocap")], 0, roi
    if "_cap" in name:
        kind, cap = name.rsplit("_cap", 1)
        return kind, int(cap), roi
    return name, 64, roi


def build_models(variants, image_size: int, seed: int, score_thresh: float = 0.05) -> dict:
    """The named variants, every Mask^X one with the stock model's shared weights (see module doc)."""
    torch.manual_seed(seed)
    stock = build_stock(image_size, score_thresh)
    models = {}
    for name in variants:
        if name == "stock":
            models[name] = stock
            continue
        kind, cap, roi = parse_variant(name)
        torch.manual_seed(seed)
        models[name], _ = build_maskx(kind, image_size, cap, score_thresh, roi)
        share_weights(stock, models[name])
    return models


def bench_train(args, variants, instances: int, reps: int, warmup: int, profile_path: Path | None = None) -> dict:
    """a (and d): interleaved training steps of ``variants``; FLOPs; optionally a profile table."""
    models = build_models(variants, args.image_size, args.seed)
    mask_rois = {n: count_mask_rois(m) for n, m in models.items()}
    # lr 0: the weights, so the proposals and sampled RoIs, stay the same in every model and step
    optimizers = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.0, momentum=0.9,
                                     weight_decay=1e-4) for n, m in models.items()}
    images, targets = synthetic_batch(args.image_size, args.seed, instances=instances)
    for m in models.values():
        m.train()
    seed = args.seed
    steps = {n: (lambda m=m, o=optimizers[n]: train_step(m, o, images, targets, seed)) for n, m in models.items()}

    # sanity (and the first warm-up): identical detector losses (same weights, same RoIs) in every model
    first = {n: step() for n, step in steps.items()}
    detector_keys = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
    same_detector = all(abs(first[n][k] - first["stock"][k]) <= 1e-4 * max(1.0, abs(first["stock"][k]))
                        for n in models for k in detector_keys)
    train = interleave(steps, reps, max(0, warmup - 1), base="stock")
    for n, m in models.items():
        train[n]["mask_rois_per_step"] = sorted(set(mask_rois[n]))
        train[n]["params_m"] = params_m(m)
        train[n]["losses_first_step"] = first[n]
        flops = step_flops(steps[n])
        train[n]["gflop_per_step"] = flops / 1e9
        train[n]["achieved_gflops"] = flops / 1e9 / train[n]["median_s"]
        train[n]["achieved_gflops_best"] = flops / 1e9 / train[n]["min_s"]
    for n in models:
        train[n]["gflop_vs_stock"] = train[n]["gflop_per_step"] / train["stock"]["gflop_per_step"]

    if profile_path is not None:  # one profiled step each (Mask^X R-CNN first), after the timed ones
        from torch.profiler import ProfilerActivity, profile

        tables = []
        for n in [v for v in ("maskx_mlp_cap64", "maskx_mlp_nocap", "stock") if v in models]:
            with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[n]()
            tables.append(f"## {n}: one training step, batch {BATCH}, {args.image_size} px, {instances} instances/img, "
                          f"{ROIS_PER_IMAGE} RoIs/img, {train[n]['mask_rois_per_step']} mask RoIs/step, "
                          f"{torch.get_num_threads()} threads\n\n"
                          + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        profile_path.write_text("\n\n".join(tables) + "\n")
    return {"instances_per_image": instances, "same_detector_losses": same_detector, "variants": train}


def bench_inference(args, reps: int, warmup: int) -> dict:
    """b: one image, 100 detections (score threshold 0), the same shared weights in every model."""
    models = build_models(INFER_VARIANTS, args.image_size, args.seed, score_thresh=0.0)
    image = synthetic_batch(args.image_size, args.seed)[0][0]
    dets, flops = {}, {}
    for n, m in models.items():
        m.eval()
        dets[n] = infer_step(m, image)  # also the first warm-up
        flops[n] = step_flops(lambda m=m: infer_step(m, image))
    infer = interleave({n: (lambda m=m: infer_step(m, image)) for n, m in models.items()},
                       reps, max(0, warmup - 1), base="stock")
    for n in models:
        infer[n]["detections"] = dets[n]
        infer[n]["gflop_per_image"] = flops[n] / 1e9
        infer[n]["gflop_vs_stock"] = flops[n] / flops["stock"]
    return infer


# ----------------------------------------------------------------------------- report

def targets_report(res: dict) -> dict:
    train, infer, pred = res["train"]["variants"], res["inference"], res["mask_predictor"]
    t = {}
    for n in TRAIN_VARIANTS[1:]:
        t[f"train_{n}_ratio"] = train[n]["ratio_vs_stock"]
        t[f"train_{n}_met"] = train[n]["ratio_vs_stock"] <= TARGETS["train_ratio_max"]
    for n in INFER_VARIANTS[1:]:
        t[f"inference_{n}_ratio"] = infer[n]["ratio_vs_stock"]
        t[f"inference_{n}_met"] = infer[n]["ratio_vs_stock"] <= TARGETS["inference_ratio_max"]
    for mode in ("inference", "training"):  # the same RoI labels at every K (predictor_speed.py); not a target:
        # ours_uniform, whose T runs on more distinct labels at larger K (up to R), is in the table
        r = pred[mode][f"ours_K{PRED_KS[-1]}"][f"ratio_vs_K{PRED_KS[0]}"]
        t[f"predictor_{mode}_ours_K{PRED_KS[-1]}_over_K{PRED_KS[0]}_ratio"] = r
        t[f"predictor_{mode}_ours_K{PRED_KS[-1]}_over_K{PRED_KS[0]}_met"] = r <= TARGETS["predictor_3001_over_81_max"]
    return t


def _train_table(title: str, section: dict) -> list[str]:
    lines = [f"| {title} | s/step (median) | x stock (paired median) | x stock (min/min) | mask RoIs/step "
             "| GFLOP/step | GFLOP x stock | GFLOP/s (median) | % of matmul peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, r in section["variants"].items():
        lines.append(f"| {n} | {r['median_s']:.2f} | {r['ratio_vs_stock']:.3f} | "
                     f"{r['min_s'] / section['variants']['stock']['min_s']:.3f} | "
                     f"{'/'.join(map(str, r['mask_rois_per_step']))} | {r['gflop_per_step']:.0f} | "
                     f"{r['gflop_vs_stock']:.3f} | {r['achieved_gflops']:.0f} | {100 * r['fraction_of_matmul_peak']:.0f} |")
    return lines


def _before_after(what: str, before: str, variants: dict, after: str, unit: str, without: str = "without it",
                  name: str = "", digits: int = 3) -> str:
    """One line of a speed-up: the ``after`` variant's median against ``before``'s, and the ratio of
    their paired ratios to stock."""
    b, a = variants[before], variants[after]
    return (f"- {what}, {name or before}, {unit}: {a['median_s']:.{digits}f} vs {b['median_s']:.{digits}f} {without} "
            f"({a['ratio_vs_stock'] / b['ratio_vs_stock']:.3f}x)")


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [f"Mask^X vs stock Mask R-CNN: ResNet-18 FPN, {m['image_size']} px, batch {BATCH}, {ROIS_PER_IMAGE} RoIs/img, "
             f"K = {NUM_CLASSES}, {m['threads']} threads, {m['reps']} interleaved reps ({m['date']}, load average "
             f"{m['load_avg_start'][0]:.1f} at start, {m['load_avg_end'][0]:.1f} at end); fp32 matmul peak "
             f"{res['matmul_peak']['best_gflops']:.0f} GFLOP/s ({m['threads']} threads; 1 thread: "
             f"{res['matmul_peak']['one_thread_best_gflops']:.0f})",
             ""]
    lines += _train_table(f"train, {res['train']['instances_per_image']} instances/img", res["train"]) + [""]
    lines += _train_table(f"train, {res['train_dense']['instances_per_image']} instances/img",
                          res["train_dense"]) + [""]
    for section in ("train", "train_dense"):  # the profile-driven speed-up: before (_tvroi) and after
        v = res[section]["variants"]
        for n in [n for n in v if n.endswith("_tvroi") and n[:-len("_tvroi")] in v]:
            lines.append(_before_after("sparse RoIAlign backward", n, v, n[:-len("_tvroi")],
                                       f"{res[section]['instances_per_image']} instances/img, s/step",
                                       "with torchvision's backward", name=n[:-len("_tvroi")], digits=2))
        for n in [n for n in v if n.endswith("_sparsefwd") and n[:-len("_sparsefwd")] in v]:
            lines.append(_before_after("sparse RoIAlign forward", n[:-len("_sparsefwd")], v, n,
                                       f"{res[section]['instances_per_image']} instances/img, s/step"))
    for n in [n for n in res["inference"] if n.endswith("_sparsefwd") and n[:-len("_sparsefwd")] in res["inference"]]:
        lines.append(_before_after("sparse RoIAlign forward", n[:-len("_sparsefwd")], res["inference"], n,
                                   "inference, s/img"))
    lines.append("")
    stock_min = res["inference"]["stock"]["min_s"]
    lines += [f"| inference (1 image, 100 dets, {m['inference_reps']} reps) | s/img (median) | x stock (paired median) "
              "| x stock (min/min) | GFLOP/img | GFLOP x stock | detections |", "|---|---|---|---|---|---|---|"]
    for n, r in res["inference"].items():
        lines.append(f"| {n} | {r['median_s']:.3f} | {r['ratio_vs_stock']:.3f} | {r['min_s'] / stock_min:.3f} | "
                     f"{r['gflop_per_image']:.1f} | {r['gflop_vs_stock']:.3f} | {r['detections']} |")
    lines += ["", f"| mask predictor, R = {PRED_ROIS} | K | distinct labels | ms (median) | x same method at K=81 | stock / ours "
                  "| peak MB (profiler) | logits MB (analytic) |", "|---|---|---|---|---|---|---|---|"]
    for mode, rows in res["mask_predictor"].items():
        order = {"stock": 0, "ours": 1, "ours_uniform": 2}
        for r in sorted(rows.values(), key=lambda r: (order[r["method"]], r["K"])):
            ratio = f"{r['stock_over_ours']:.1f}" if "stock_over_ours" in r else ""
            lines.append(f"| {r['method']} {mode} | {r['K']} | {r['distinct_labels']} | {1000 * r['median_s']:.1f} | "
                         f"{r['ratio_vs_K81']:.2f} | {ratio} | {r['peak_mb']:.1f} | {r['logits_mb_analytic']:.1f} |")
    lines += ["", "| target | value | met |", "|---|---|---|"]
    t = res["targets"]
    for key in t:
        if key.endswith("_ratio"):
            met = t[key[:-len("_ratio")] + "_met"]
            lines.append(f"| {key[:-len('_ratio')]} | {t[key]:.3f} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "model_speed.json"))
    ap.add_argument("--profile-out", default=None,
                    help="profiler table of one training step (default: profile_train_step.txt beside --out)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repetitions of training steps and of the stock predictor (default 7; 1 with --quick); "
                         "inference gets 3x, the cheap Mask^X predictor 5x")
    ap.add_argument("--warmup", type=int, default=None, help="untimed repetitions (default 2; 0 with --quick)")
    ap.add_argument("--dense-instances", type=int, default=DENSE_INSTANCES,
                    help="instances per image of the second training comparison, where the mask RoI cap binds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewest repetitions: a smoke run, numbers are noise")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    inference_reps, ours_reps = (reps, reps) if args.quick else (3 * reps, 5 * reps)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    profile_path = Path(args.profile_out) if args.profile_out else out.parent / "profile_train_step.txt"
    import torchvision

    t0 = time.perf_counter()
    res = {"meta": {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", os.path.relpath(sys.argv[0], REPO) if sys.argv else "", *sys.argv[1:]]),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_start": list(os.getloadavg()), "threads": args.threads, "image_size": args.image_size,
        "batch": BATCH, "rois_per_image": ROIS_PER_IMAGE, "num_classes": NUM_CLASSES, "reps": reps,
        "inference_reps": inference_reps, "predictor_reps": {"stock": reps, "ours": ours_reps}, "warmup": warmup,
        "quick": args.quick, "seed": args.seed, "targets": TARGETS, "profile": str(profile_path)}}
    # the matmul peak, sampled between sections (other work on the machine only ever lowers it)
    peaks = [matmul_gflops()]
    res["train"] = bench_train(args, TRAIN_VARIANTS, INSTANCES_PER_IMAGE, reps, warmup, profile_path)
    peaks.append(matmul_gflops())
    res["train_dense"] = bench_train(args, DENSE_VARIANTS, args.dense_instances, reps, warmup)
    peaks.append(matmul_gflops())
    res["inference"] = bench_inference(args, inference_reps, warmup)
    peaks.append(matmul_gflops())
    res["mask_predictor"] = bench_predictor(args, reps, warmup, ours_reps)
    peaks.append(matmul_gflops())
    torch.set_num_threads(1)
    one_thread = matmul_gflops()
    torch.set_num_threads(args.threads)
    res["matmul_peak"] = {"n": 2048, "best_gflops": max(peaks), "samples_gflops": peaks,
                          "one_thread_best_gflops": one_thread}
    for section in ("train", "train_dense"):
        for row in res[section]["variants"].values():
            row["fraction_of_matmul_peak"] = row["achieved_gflops"] / max(peaks)
    res["targets"] = targets_report(res)
    res["meta"]["load_avg_end"] = list(os.getloadavg())
    res["meta"]["wall_s"] = time.perf_counter() - t0
    write_json_atomic(res, out)
    print(markdown(res))
    print(f"\nwrote {out} and {profile_path} in {res['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
