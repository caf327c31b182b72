"""Section c of ``model_speed.py``: the mask predictor alone against the class count K (stock
torchvision's 1x1 conv to K channels vs Mask^X's weights gathered per RoI), time and peak memory.

Labels of the R RoIs: ``stock`` and ``ours`` get the same pattern at every K, 100 draws from 80
classes (about 57 distinct) spread over the K classes (label c → 1 + (c - 1)(K - 1) / 80), so only
K changes between columns. Mask^X runs T on the distinct labels of a batch, so its work grows with
their number (at most R), not with K: ``ours_uniform`` shows that with labels drawn uniformly over
the K classes (about 57, 95 and 98 distinct at K = 81, 1001, 3001)."""
from __future__ import annotations

import contextlib

import torch
from timing import interleave, peak_tensor_bytes  # benchmarks/, beside this file
from torch.nn import functional as F

from maskx.models.mask_heads import MaskWeights, gather_mask_logits
from maskx.models.transfer import WeightTransfer

PRED_KS = (81, 1001, 3001)
PRED_ROIS = 100
MASK_SIZE = 28


class PredictorCase:
    """The mask predictor alone at one K, for one method ('stock' or 'ours'), one mode."""

    def __init__(self, method: str, k: int, training: bool, seed: int):
        """``method``: 'stock', 'ours' (the label pattern of K = 81 spread over K) or 'ours_uniform'."""
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

        g = torch.Generator().manual_seed(seed)
        self.method, self.k, self.training = method, k, training
        self.features = torch.randn(PRED_ROIS, 256, MASK_SIZE, MASK_SIZE, generator=g).relu_()
        self.features.requires_grad_(training)
        base = torch.randint(1, PRED_KS[0], (PRED_ROIS,), generator=g)
        spread = 1 + (base - 1) * (k - 1) // (PRED_KS[0] - 1)
        self.labels = torch.randint(1, k, (PRED_ROIS,), generator=g) if method == "ours_uniform" else spread
        self.targets = (torch.rand(PRED_ROIS, MASK_SIZE, MASK_SIZE, generator=g) > 0.5).float()
        torch.manual_seed(seed)
        if method == "stock":
            self.conv = MaskRCNNPredictor(256, 256, k).mask_fcn_logits  # the 1x1 conv to K channels
            self.params = list(self.conv.parameters())
        else:
            self.box_predictor = FastRCNNPredictor(1024, k)  # w_det source (cls+box: 5120-d rows)
            self.box_predictor.requires_grad_(False)  # stop_grad: the mask loss never reaches it
            self.weights = MaskWeights("transfer", k, 256, "cls+box", WeightTransfer(5120, 256, 2, 256, "leaky_relu"))
            self.params = list(self.weights.parameters())

    def __call__(self):
        from torchvision.models.detection.roi_heads import maskrcnn_inference

        ctx = contextlib.nullcontext() if self.training else torch.inference_mode()
        with ctx:
            if self.method == "stock":
                logits = self.conv(self.features)  # [R, K, 28, 28]
                if not self.training:
                    return maskrcnn_inference(logits, [self.labels])
                own = logits[torch.arange(PRED_ROIS), self.labels]
            else:
                w, b = self.weights(self.labels, self.box_predictor)  # T on the distinct labels only
                own = gather_mask_logits(self.features, w, b)  # [R, 28, 28]
                if not self.training:
                    return own.sigmoid()[:, None].split([PRED_ROIS])
            self.reset()
            F.binary_cross_entropy_with_logits(own, self.targets).backward()

    def reset(self) -> None:
        """Drop the gradients of the last call (so a measured call allocates its own)."""
        self.features.grad = None
        for p in self.params:
            p.grad = None

    def logits_bytes(self) -> int:
        """Analytic bytes of the logits (inference: + their sigmoid; training: + their gradient)."""
        per = PRED_ROIS * MASK_SIZE * MASK_SIZE * 4
        return 2 * per * (self.k if self.method == "stock" else 1)


def bench_predictor(args, reps: int, warmup: int, ours_reps: int) -> dict:
    """c: each method's three K interleaved with each other (ours, being cheap, with more reps)."""
    out = {}
    for mode, training in (("inference", False), ("training", True)):
        rows = {}
        for method, n in (("stock", reps), ("ours", ours_reps), ("ours_uniform", ours_reps)):
            cases = {f"{method}_K{k}": PredictorCase(method, k, training, args.seed) for k in PRED_KS}
            times = interleave(cases, n, warmup, base=f"{method}_K{PRED_KS[0]}")
            for name, case in cases.items():
                rows[name] = {"method": method, "K": case.k, "distinct_labels": int(case.labels.unique().numel()),
                              **times[name],
                              "peak_mb": peak_tensor_bytes(case) / 2 ** 20,
                              "logits_mb_analytic": case.logits_bytes() / 2 ** 20}
                for key in [key for key in rows[name] if key.endswith(f"_vs_{method}_K{PRED_KS[0]}")]:
                    rows[name][key.replace(f"_vs_{method}_", "_vs_")] = rows[name].pop(key)
            del cases
        for k in PRED_KS:  # ours against stock at the same K (medians: they were not interleaved)
            rows[f"ours_K{k}"]["stock_over_ours"] = rows[f"stock_K{k}"]["median_s"] / rows[f"ours_K{k}"]["median_s"]
        out[mode] = rows
    return out
