"""RoIAlign as a sparse matrix product on CPU: a multithreaded backward (torchvision's is a serial
loop) and, optionally, a faster forward.

torchvision's CPU ``roi_align`` backward runs on one thread, and its forward is a serial loop too;
on few cores both are large shares of a training step and of a prediction (profile:
benchmarks/README.md). RoIAlign is linear in the features: with the feature map flattened
channels-last, X [B·H·W, C], the output is ``A · X`` where A [R·PH·PW, B·H·W] holds the bilinear
weights of each bin's S × S sampling points (4 per point, divided by S²). Same sampling rules as
torchvision with ``aligned=False`` (tests compare both to 1e-5).

- backward (``roi_align_backward="sparse"``): the forward stays torchvision's; the backward builds
  Aᵀ in CSR form (one row per feature pixel, found by sorting the sampled pixel ids) and computes
  dX = Aᵀ · dOut.
- torchvision's forward itself runs on ``torch.get_num_threads()`` threads (``threaded_roi_align``), each
  on a contiguous slice of the RoIs: every RoI is pooled by the same code from the same inputs, so
  the result is torchvision's bit for bit (tested), in less time on several threads.
- forward (``roi_align_forward="sparse"``): every FPN level is stacked into one X and one product
  A · X pools all RoIs (no per-level loop, no scatter into the result); the output is a
  channels-last view, so the mask head's convolutions run channels-last too. Results equal
  torchvision's up to float summation order (~1e-6 relative), so it is off by default: trained
  checkpoints (the study's, the shipped model) are reproduced bit for bit with torchvision's forward.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Union

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

Num = Union[int, float, Tensor]
MIN_ROIS_PER_THREAD = 16  # below this a thread's slice costs more to hand out than to pool
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def thread_pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` threads for this process (a forked DataLoader worker gets its own), for serial
    CPU kernels that release the GIL (RoIAlign forward here, the RPN's NMS in ``maskx.ops.rpn``)."""
    key = (os.getpid(), n)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(n, thread_name_prefix="maskx")
    return _POOLS[key]


def _slice_roi_align(features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float,
                     sampling_ratio: int) -> Tensor:
    with torch.no_grad():  # grad mode is per thread: a pool thread must not record a graph
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False)


def threaded_roi_align(features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float,
                       sampling_ratio: int) -> Tensor:
    """torchvision's ``roi_align`` (aligned=False) without autograd, [R, C, PH, PW]: its CPU kernel is a
    serial loop over the RoIs, so slices of ``rois`` [R, 5] run on ``torch.get_num_threads()`` threads
    (the kernel releases the GIL). The same result bit for bit: each RoI is pooled alone."""
    n = min(torch.get_num_threads(), len(rois) // MIN_ROIS_PER_THREAD)
    if n < 2 or features.device.type != "cpu":
        return _slice_roi_align(features, rois, output_size, spatial_scale, sampling_ratio)
    parts = thread_pool(n).map(lambda r: _slice_roi_align(features, r, output_size, spatial_scale, sampling_ratio),
                         rois.tensor_split(n))
    return torch.cat(list(parts))


def _axis(v: Tensor, size: Num) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Bilinear neighbours along one axis, as torchvision's ``bilinear_interpolate``:
    (low index, high index, low weight, high weight, inside) for sample coordinates ``v``
    (``size``: an int, or a tensor broadcastable to ``v``)."""
    inside = (v >= -1.0) & (v <= size)
    v = v.clamp(min=0)
    low = v.floor().long()
    top = low >= size - 1
    low = torch.where(top, size - 1, low)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, torch.zeros_like(v), v - low.to(v.dtype))
    return low, high, 1 - frac, frac, inside


def _entries(rois: Tensor, scale: Num, H: Num, W: Num, base: Tensor, output_size: tuple,
             sampling_ratio: int) -> tuple[Tensor, Tensor]:
    """The nonzeros of A: feature-row ids and weights, each [R, PH, S, PW, S, 4].

    rois [R, 5] = (batch index, x1, y1, x2, y2) in image pixels; ``scale``, ``H``, ``W``: the
    feature map's (numbers, or [R, 1, 1] tensors when RoIs come from different FPN levels);
    ``base`` [R]: the X row of each RoI's feature map's first pixel."""
    PH, PW = output_size
    S = sampling_ratio
    dtype = rois.dtype if rois.is_floating_point() else torch.float32
    per_roi_scale = scale[:, 0, 0] if isinstance(scale, Tensor) else scale
    x1, y1, x2, y2 = (rois[:, k].to(dtype) * per_roi_scale for k in range(1, 5))
    bin_h = torch.clamp(y2 - y1, min=1.0) / PH
    bin_w = torch.clamp(x2 - x1, min=1.0) / PW
    s = (torch.arange(S, dtype=dtype) + 0.5) / S
    y = y1[:, None, None] + (torch.arange(PH, dtype=dtype)[None, :, None] + s) * bin_h[:, None, None]  # [R, PH, S]
    x = x1[:, None, None] + (torch.arange(PW, dtype=dtype)[None, :, None] + s) * bin_w[:, None, None]  # [R, PW, S]
    y_lo, y_hi, wy_lo, wy_hi, y_in = _axis(y, H)
    x_lo, x_hi, wx_lo, wx_hi, x_in = _axis(x, W)
    W5 = W[:, :, :, None, None] if isinstance(W, Tensor) else W
    base = base[:, None, None, None, None]
    inside = (y_in[:, :, :, None, None] & x_in[:, None, None, :, :]).to(dtype) / (S * S)
    pix, val = [], []
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):  # [R, PH, S, PW, S] each
            pix.append(base + yi[:, :, :, None, None] * W5 + xi[:, None, None, :, :])
            val.append(wy[:, :, :, None, None] * wx[:, None, None, :, :] * inside)
    return torch.stack(pix, -1), torch.stack(val, -1)


def _csr(crow: Tensor, col: Tensor, val: Tensor, shape: tuple) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _transpose_csr(pix: Tensor, val: Tensor, n_pixels: int) -> Tensor:
    """Aᵀ [n_pixels, R·PH·PW] from entries [R, PH, S, PW, S, 4]."""
    R, PH, S, PW = pix.shape[:4]
    pix, val = pix.reshape(-1), val.reshape(-1)
    out = torch.arange(R * PH * PW).view(R, PH, 1, PW, 1, 1).expand(R, PH, S, PW, S, 4).reshape(-1)
    order = torch.argsort(pix)
    crow = torch.zeros(n_pixels + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(pix, minlength=n_pixels), 0)
    return _csr(crow, out[order], val[order], (n_pixels, R * PH * PW))


def roi_align_transpose_matrix(rois: Tensor, feature_shape: tuple, output_size: tuple, spatial_scale: float,
                               sampling_ratio: int) -> Tensor:
    """Aᵀ as a sparse CSR [B·H·W, R·PH·PW] (rois [R, 5] = (batch index, x1, y1, x2, y2))."""
    B, _, H, W = feature_shape
    pix, val = _entries(rois, spatial_scale, H, W, rois[:, 0].long() * H * W, output_size, sampling_ratio)
    return _transpose_csr(pix, val, B * H * W)


def _feature_grads(at: Tensor, grad: Tensor, shapes: list[tuple]) -> list[Tensor]:
    """dX = Aᵀ · dOut for grad [R, C, PH, PW], split back into feature maps of ``shapes`` ([B, C, H, W] each)."""
    C = grad.shape[1]
    dx = at @ grad.permute(0, 2, 3, 1).reshape(-1, C).to(at.dtype)  # [Σ B·H·W, C]
    sizes = [b * h * w for b, _, h, w in shapes]
    return [d.view(b, h, w, C).permute(0, 3, 1, 2).contiguous().to(grad.dtype)
            for d, (b, _, h, w) in zip(dx.split(sizes), shapes)]


class _RoIAlign(torch.autograd.Function):
    """torchvision's forward, sparse backward."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float, sampling_ratio: int):
        ctx.save_for_backward(rois)
        ctx.args = (tuple(features.shape), output_size, spatial_scale, sampling_ratio)
        return threaded_roi_align(features, rois, output_size, spatial_scale, sampling_ratio)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        shape, output_size, spatial_scale, sampling_ratio = ctx.args
        if rois.shape[0] == 0:
            return grad.new_zeros(shape), None, None, None, None
        at = roi_align_transpose_matrix(rois, shape, output_size, spatial_scale, sampling_ratio)
        return _feature_grads(at, grad, [shape])[0], None, None, None, None


class _SparseRoIAlign(torch.autograd.Function):
    """Sparse forward (A · X over all levels at once) and sparse backward (Aᵀ · dOut)."""

    @staticmethod
    def forward(ctx, pix: Tensor, val: Tensor, *feats: Tensor):
        C = feats[0].shape[1]
        x = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, C) for f in feats]).to(val.dtype)  # [Σ B·H·W, C]
        R, PH, S, PW = pix.shape[:4]
        order = (0, 1, 3, 2, 4, 5)  # each output bin's 4·S² entries side by side: CSR rows in order
        col, w = pix.permute(order).reshape(-1), val.permute(order).reshape(-1)
        crow = torch.arange(R * PH * PW + 1) * (4 * S * S)
        out = _csr(crow, col, w, (R * PH * PW, x.shape[0])) @ x  # [R·PH·PW, C]
        ctx.save_for_backward(pix, val)
        ctx.shapes = [tuple(f.shape) for f in feats]
        return out.to(feats[0].dtype).view(R, PH, PW, C).permute(0, 3, 1, 2)  # channels-last [R, C, PH, PW]

    @staticmethod
    def backward(ctx, grad: Tensor):
        pix, val = ctx.saved_tensors
        at = _transpose_csr(pix, val, sum(b * h * w for b, _, h, w in ctx.shapes))
        return (None, None, *_feature_grads(at, grad, ctx.shapes))


def roi_align_cpu(features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float,
                  sampling_ratio: int) -> Tensor:
    """torchvision's ``roi_align`` (aligned=False) with the sparse CPU backward."""
    if not (torch.is_grad_enabled() and features.requires_grad):
        return threaded_roi_align(features, rois, output_size, spatial_scale, sampling_ratio)
    if features.device.type == "cpu" and sampling_ratio > 0:
        return _RoIAlign.apply(features, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio))
    return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False)  # its own backward


def sparse_roi_align(feats: list[Tensor], scales: list[float], rois: Tensor, levels: Tensor, output_size: tuple,
                     sampling_ratio: int) -> Tensor:
    """RoIAlign (aligned=False) of RoIs [R, 5] from several feature maps [B, C, Hl, Wl] at once, RoI r
    from ``feats[levels[r]]`` → channels-last [R, C, PH, PW]."""
    sizes = torch.tensor([f.shape[0] * f.shape[2] * f.shape[3] for f in feats])
    offsets = torch.cumsum(sizes, 0) - sizes
    lv = levels.long()
    per = (lambda v, dt: torch.tensor(v, dtype=dt)[lv][:, None, None])
    H, W = per([f.shape[2] for f in feats], torch.long), per([f.shape[3] for f in feats], torch.long)
    dtype = rois.dtype if rois.is_floating_point() else torch.float32
    base = offsets[lv] + rois[:, 0].long() * H[:, 0, 0] * W[:, 0, 0]
    pix, val = _entries(rois, per(scales, dtype), H, W, base, tuple(output_size), sampling_ratio)
    return _SparseRoIAlign.apply(pix, val, *feats)


class SparseMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same level mapping and output) using ``roi_align_cpu``;
    with ``sparse_forward`` on CPU, one sparse product for all levels (``sparse_roi_align``)."""

    def __init__(self, *args, sparse_forward: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.sparse_forward = sparse_forward

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        size = tuple(self.output_size)
        if self.sparse_forward and feats[0].device.type == "cpu" and self.sampling_ratio > 0:
            levels = torch.zeros(len(rois), dtype=torch.long) if len(feats) == 1 else self.map_levels(boxes)
            return sparse_roi_align(feats, self.scales, rois, levels, size, self.sampling_ratio)
        if len(feats) == 1:
            return roi_align_cpu(feats[0], rois, size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        result = feats[0].new_zeros((len(rois), feats[0].shape[1]) + size)
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            result[idx] = roi_align_cpu(feat, rois[idx], size, scale, self.sampling_ratio).to(result.dtype)
        return result
